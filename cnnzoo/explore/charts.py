"""The explorer's charts from the runs on disk, as Plotly figures (JSON for ``Plotly.newPlot``).

``--runs DIR`` may be a run folder, a league folder, a degradation folder, or a folder holding any
of these one or two levels down. Folders that cannot be read are listed with the reason, not fatal:
a half-finished run should not take the page down.
"""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cnnzoo.studies.compare import load_points, load_published, plotly_figure

_LEAGUE, _SUMMARY, _DEGRADATION = "leaderboard.json", "summary.json", "degradation.json"


def _walk(root: Path, depth: int = 2) -> Iterator[Path]:
    yield root
    if depth > 0 and root.is_dir() and not (root / _LEAGUE).is_file():  # a league's runs are on its board
        for child in sorted(p for p in root.iterdir() if p.is_dir()):
            yield from _walk(child, depth - 1)


def discover(roots: Sequence[str | Path]) -> dict[str, list[Path]]:
    """Run folders and league folders (for the accuracy chart) and degradation folders under ``roots``."""
    found: dict[str, list[Path]] = {"runs": [], "degradation": []}
    for root in roots:
        for folder in _walk(Path(root)):
            if (folder / _LEAGUE).is_file() or (folder / _SUMMARY).is_file():
                found["runs"].append(folder)
            if (folder / _DEGRADATION).is_file():
                found["degradation"].append(folder)
    return found


def accuracy_chart(roots: Sequence[str | Path]) -> dict[str, Any]:
    """``cnnzoo compare``'s figure of every run and league under ``roots``, and what was skipped."""
    ours, skipped = [], []
    for folder in discover(roots)["runs"]:
        try:
            ours += load_points([folder])
        except (OSError, ValueError) as exc:
            skipped.append(str(exc))
    fig = plotly_figure(ours, load_published())
    return dict(figure=json.loads(fig.to_json()), runs=len(ours), skipped=skipped)


def degradation_chart(roots: Sequence[str | Path]) -> dict[str, Any]:
    """Training (dashed) and test (solid) error per epoch of each ``cnnzoo degradation`` folder."""
    import plotly.graph_objects as go

    fig, skipped, findings = go.Figure(), [], []
    for folder in discover(roots)["degradation"]:
        try:
            result = json.loads((folder / _DEGRADATION).read_text(encoding="utf-8"))
            models = result["models"]
            findings += [f["text"] for f in result.get("findings", [])]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            skipped.append(f"{folder / _DEGRADATION}: {exc}")
            continue
        for name, curves in models.items():
            colour = "#c1121f" if name.startswith("plain") else "#0077b6"
            width = 1.2 + 0.02 * _depth(name)  # the deeper net, the thicker its line
            for kind, dash in (("train_error", "dash"), ("test_error", "solid")):
                fig.add_trace(go.Scatter(
                    x=curves["epoch"], y=[100 * e for e in curves[kind]], mode="lines+markers",
                    name=f"{name} {kind.replace('_', ' ')}", line=dict(color=colour, dash=dash, width=width),
                    hovertemplate=f"{name}<br>epoch %{{x}}<br>{kind.replace('_', ' ')} %{{y:.2f}}%<extra></extra>"))
    fig.update_layout(title="Plain vs residual nets: training (dashed) and test (solid) error",
                      xaxis=dict(title="epoch", dtick=1), yaxis_title="error (%)", template="plotly_white", height=460)
    return dict(figure=json.loads(fig.to_json()), findings=findings, skipped=skipped)


def _depth(name: str) -> int:
    digits = "".join(ch for ch in name if ch.isdigit())
    return int(digits) if digits else 0
