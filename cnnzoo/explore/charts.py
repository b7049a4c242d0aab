"""The explorer's charts from the runs on disk, as Plotly figures (JSON for ``Plotly.newPlot``).

``--runs DIR`` may be a run folder, a league folder, a degradation folder, or a folder holding any
of these one or two levels down. Folders that cannot be read are listed with the reason, not fatal:
a half-finished run should not take the page down. A loaded checkpoint's training curves come from
its run's ``metrics.csv``.
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cnnzoo.explore.zoo import UnknownName
from cnnzoo.studies.compare import load_points, load_published, plotly_figure

_LEAGUE, _SUMMARY, _DEGRADATION = "leaderboard.json", "summary.json", "degradation.json"
_METRICS = "metrics.csv"
# The columns of metrics.csv (cnnzoo.training.loop.METRIC_COLUMNS) the curves plot: (column, panel, scale).
_CURVES = (("train_loss", 1, 1), ("test_loss", 1, 1), ("train_top1", 2, 100), ("test_top1", 2, 100), ("lr", 3, 1))


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


def run_folder(source: str | Path) -> Path:
    """The run folder of a checkpoint: itself, or the folder a weights file sits in."""
    source = Path(source)
    return source if source.is_dir() else source.parent


def read_metrics(path: Path) -> dict[str, list[float | None]]:
    """``epoch`` and the plotted columns of a run's metrics.csv that it has, as numbers (None where a
    value is not finite: NaN marks an epoch not evaluated); a ValueError naming the file, line and
    column of anything else."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise ValueError(f"{path}: cannot be read ({exc.strerror})") from exc
    rows = csv.reader(io.StringIO(text))
    try:
        header = next(rows, None)
        if not header:
            raise ValueError(f"{path}: empty, no header row")
        if "epoch" not in header:
            raise ValueError(f"{path}: no 'epoch' column in its header ({', '.join(header)})")
        wanted = {c: header.index(c) for c in ("epoch", *(name for name, _, _ in _CURVES)) if c in header}
        if len(wanted) == 1:
            raise ValueError(f"{path}: none of the columns {', '.join(n for n, _, _ in _CURVES)} in its header")
        columns: dict[str, list[float | None]] = {c: [] for c in wanted}
        for row in filter(None, rows):  # blank lines are no epoch
            where = f"{path}, line {rows.line_num}"
            if len(row) != len(header):
                raise ValueError(f"{where}: {len(row)} fields where its header has {len(header)}")
            for name, i in wanted.items():
                columns[name].append(_number(row[i], f"{where}, column {name!r}"))
            if columns["epoch"][-1] is None:
                raise ValueError(f"{where}: epoch {row[wanted['epoch']]!r} is not a finite number")
    except csv.Error as exc:
        raise ValueError(f"{path}, line {rows.line_num}: {exc}") from exc
    return columns


def _number(cell: str, where: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        raise ValueError(f"{where}: {cell!r} is not a number") from None
    return value if math.isfinite(value) else None


def run_curves(cid: str, source: str | Path) -> dict[str, Any]:
    """Loss, top-1 (train dashed, test solid, as the degradation chart draws them) and learning
    rate per epoch of checkpoint ``cid``'s run, and the columns they come from."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    path = run_folder(source) / _METRICS
    if not path.is_file():
        raise UnknownName(f"checkpoint {cid!r}: no {_METRICS} in {path.parent} (a run folder of `cnnzoo train` has one)")
    columns = read_metrics(path)
    panels = ["loss", "top-1 (%)"] + (["learning rate"] if "lr" in columns else [])
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.06)
    for name, panel, scale in _CURVES:
        if name in columns:
            ys = [None if v is None else scale * v for v in columns[name]]
            line = dict(color=("#c1121f", "#0077b6", "#555555")[panel - 1],
                        dash="dash" if name.startswith("train") else "solid")
            fig.add_trace(go.Scatter(x=columns["epoch"], y=ys, mode="lines+markers", connectgaps=True,
                                     name=name.replace("_", " "), line=line), row=panel, col=1)
    for row, title in enumerate(panels, start=1):
        fig.update_yaxes(title_text=title, row=row, col=1)
    fig.update_xaxes(title_text="epoch", dtick=1 if len(columns["epoch"]) <= 20 else None, row=len(panels), col=1)
    fig.update_layout(title=f"{cid}: training (dashed) and test (solid) per epoch", template="plotly_white",
                      height=180 * len(panels) + 120, margin=dict(l=60, r=20, t=50, b=40))
    return dict(checkpoint=cid, source=str(path), epochs=len(columns["epoch"]), columns=columns,
                figure=json.loads(fig.to_json()))
