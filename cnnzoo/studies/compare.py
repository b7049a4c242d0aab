"""Accuracy against cost, as in Canziani et al. 2016 (arXiv 1605.07678), Fig. 2.

``cnnzoo compare RUN_OR_LEAGUE_DIR ...`` draws two bubble charts side by side: top-1 accuracy (y)
against multiply-accumulates per image (x, log scale), bubble area proportional to the parameter
count.

- Panel 1, our runs: every run folder written by ``cnnzoo train`` (``summary.json``, ``config.json``)
  and every entry of a league folder written by ``cnnzoo league --out`` (``leaderboard.json``).
  The MACs of a run are counted here, with :func:`cnnzoo.analysis.count_macs` on the network the
  run trained (its input size, classes and constructor arguments), built on the meta device so that
  no memory is allocated and nothing is computed.
- Panel 2, the published ImageNet-1k figures of the zoo's ImageNet configurations, read from
  ``published_imagenet.csv`` shipped in the package, with a source for every figure. Its parameter
  counts and MACs are those of the networks cnnzoo builds (the tests hold them to the registry), so
  the two panels measure cost the same way.

Outputs: a PNG drawn with matplotlib's Agg canvas (no display, no global pyplot state) and an HTML
page with the same chart in Plotly (hover for each point's figures, zoom), which works offline: its
script, plotly.min.js, is written beside it rather than inlined. ``cnnzoo explore`` shows the same
figure (:func:`plotly_figure`).

``x="latency"`` (``cnnzoo compare --x latency BENCH.json``) puts measured time on the x axis
instead: milliseconds per image of each model in a ``cnnzoo bench --json`` report (its ``ours``
variant by default), matched by model name; points the report does not time are left out. Operations
are not time: the chart shows what a network's MAC count buys on the machine the report measured.
The HTML chart stays on GMACs.

Each panel scales its bubbles to its own largest network: a LeNet-5 next to a VGG on one scale would
be invisible. The size legend of each panel gives its scale.
"""
from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cnnzoo.analysis import count_macs
from cnnzoo.models.factory import create_model
from cnnzoo.utils.io import atomic_write, write_text

__all__ = ["ChartPoint", "load_published", "load_points", "load_latencies", "with_latency", "compare", "render_png",
           "render_html", "plotly_figure", "format_points"]

X_AXES = ("gmacs", "latency")

PUBLISHED_FILE = "published_imagenet.csv"
_LEAGUE_FILE = "leaderboard.json"


@dataclass
class ChartPoint:
    """One bubble. ``top1`` is in percent; ``source`` is the run folder or league file it was read
    from, or for a published point the source of its top-1 (``sources`` holds all three)."""

    panel: str  # "ours" | "published"
    model: str
    label: str
    top1: float
    gmacs: float
    params: int
    dataset: str | None
    source: str
    input_size: list[int] | None = None
    sources: dict[str, str] = field(default_factory=dict)
    latency_ms: float | None = None  # per image, from a bench report (``--x latency``)

    def x(self, axis: str) -> float:
        return self.latency_ms if axis == "latency" else self.gmacs  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# Reading points


def load_published() -> list[ChartPoint]:
    """The published ImageNet-1k figures shipped with the package (lines starting with # are notes)."""
    text = resources.files("cnnzoo.models").joinpath(PUBLISHED_FILE).read_text(encoding="utf-8")
    rows = csv.DictReader(line for line in io.StringIO(text) if not line.startswith("#"))
    points = []
    for row in rows:
        points.append(ChartPoint(
            panel="published", model=row["model"], label=row["model"], top1=float(row["top1"]),
            gmacs=float(row["gmacs"]), params=int(row["params"]), dataset="ImageNet-1k",
            source=row["top1_source"],
            sources={k: row[f"{k}_source"] for k in ("top1", "gmacs", "params")},
        ))
    return points


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def _percent(value: Any, where: str) -> float:
    """Top-1 in percent. ``cnnzoo train`` writes fractions (0.9138); a value above 1 is taken as
    already in percent, so a leaderboard written either way reads the same."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: test_top1 must be a finite number, got {value!r}")
    if not 0 <= value <= 100:
        raise ValueError(f"{where}: test_top1 {value!r} is neither a fraction (0-1) nor a percentage (0-100)")
    return float(value) * 100 if value <= 1 else float(value)


_MACS_CACHE: dict[str, tuple[int, int]] = {}


def _macs_and_params(model: str, input_size: Sequence[int], num_classes: int | None,
                     model_kwargs: dict[str, Any]) -> tuple[int, int]:
    """MACs per image and parameters of the network a run trained, counted on a meta-device copy
    (shapes only: even a VGG costs no memory and no arithmetic)."""
    import torch

    key = json.dumps([model, list(input_size), num_classes, model_kwargs], sort_keys=True, default=str)
    if key not in _MACS_CACHE:
        with torch.device("meta"):
            net = create_model(model, num_classes=num_classes, in_chans=int(input_size[0]), **model_kwargs)
        _MACS_CACHE[key] = (count_macs(net, tuple(int(s) for s in input_size)),
                            sum(p.numel() for p in net.parameters()))
    return _MACS_CACHE[key]


def _load_run(folder: Path) -> ChartPoint:
    summary_path = folder / "summary.json"
    summary = _read_json(summary_path)
    if not isinstance(summary, dict) or "model" not in summary or "test_top1" not in summary:
        raise ValueError(f"{summary_path}: expected the summary `cnnzoo train` writes (model, test_top1, ...)")
    config_path = folder / "config.json"
    config = _read_json(config_path) if config_path.is_file() else {}
    model = str(summary["model"])
    input_size = summary.get("input_size") or config.get("input_size")
    if not input_size or len(input_size) != 3:
        raise ValueError(f"{summary_path}: no input_size [C, H, W] in summary.json or config.json")
    classes = config.get("classes")
    num_classes = len(classes) if isinstance(classes, list) and classes else None
    try:
        macs, params = _macs_and_params(model, input_size, num_classes, dict(config.get("model_kwargs") or {}))
    except ValueError as exc:  # a model this cnnzoo does not know, or an input it refuses
        raise ValueError(f"{folder}: cannot rebuild its network to count MACs: {exc}") from exc
    return ChartPoint(
        panel="ours", model=model, label=model, top1=_percent(summary["test_top1"], str(summary_path)),
        gmacs=macs / 1e9, params=int(summary.get("params") or params), dataset=summary.get("dataset"),
        source=str(folder), input_size=[int(s) for s in input_size], sources={"run_dir": str(folder)},
    )


def _load_league(path: Path) -> list[ChartPoint]:
    obj = _read_json(path)
    if isinstance(obj, dict) and isinstance(obj.get("entries"), list):
        # `cnnzoo league` keeps the dataset in the board's settings; a top-level "dataset" is read too.
        settings = obj.get("settings") if isinstance(obj.get("settings"), dict) else {}
        entries, league_dataset = obj["entries"], obj.get("dataset") or settings.get("dataset")
    elif isinstance(obj, list):
        entries, league_dataset = obj, None
    else:
        raise ValueError(f"{path}: expected a leaderboard: an object with a list \"entries\", or a list of "
                         f"entries, got {type(obj).__name__}")
    points = []
    for i, entry in enumerate(entries):
        where = f"{path} entry {i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object, got {type(entry).__name__}")
        missing = [k for k in ("model", "params", "test_top1") if k not in entry]
        if "macs" not in entry and "gmacs" not in entry:
            missing.append("macs")
        if missing:
            raise ValueError(f"{where}: missing {', '.join(missing)} (each entry needs model, params, macs, test_top1)")
        gmacs = entry["macs"] / 1e9 if "macs" in entry else entry["gmacs"]
        if isinstance(gmacs, bool) or not isinstance(gmacs, (int, float)) or not gmacs > 0:
            raise ValueError(f"{where}: macs must be a positive number, got {entry.get('macs', entry.get('gmacs'))!r}")
        params = entry["params"]
        if isinstance(params, bool) or not isinstance(params, int) or params < 1:
            raise ValueError(f"{where}: params must be a positive integer, got {params!r}")
        run_dir = entry.get("run_dir")
        points.append(ChartPoint(
            panel="ours", model=str(entry["model"]), label=str(entry["model"]),
            top1=_percent(entry["test_top1"], where), gmacs=float(gmacs), params=params,
            dataset=entry.get("dataset") or league_dataset,
            source=f"{path}" + (f" (run {run_dir})" if run_dir else f" (entry {i})"),
            input_size=entry.get("input_size"),
            sources={"run_dir": str(run_dir)} if run_dir else {"entry": str(i)},
        ))
    return points


def load_points(sources: Sequence[str | Path]) -> list[ChartPoint]:
    """Panel 1's points from run folders and league folders (or leaderboard.json files), in order.

    The same model twice keeps both points: their labels get the run folder's name."""
    points: list[ChartPoint] = []
    for src in sources:
        path = Path(src)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such run or league folder")
        if path.is_file():
            if path.suffix != ".json":
                raise ValueError(f"{path}: expected a run folder (summary.json + config.json from `cnnzoo train`) "
                                 f"or a league folder / {_LEAGUE_FILE} (from `cnnzoo league --out`)")
            points += _load_league(path)
        elif (path / _LEAGUE_FILE).is_file():
            points += _load_league(path / _LEAGUE_FILE)
        elif (path / "summary.json").is_file():
            points.append(_load_run(path))
        elif (path / "config.json").is_file():
            raise ValueError(f"{path}: a run folder without summary.json: its training has not finished "
                             f"(continue it with `cnnzoo train --resume {path}`)")
        else:
            raise ValueError(f"{path}: neither a run folder (summary.json + config.json, written by `cnnzoo train`) "
                             f"nor a league folder ({_LEAGUE_FILE}, written by `cnnzoo league --out`)")
    _disambiguate(points)
    return points


def _disambiguate(points: list[ChartPoint]) -> None:
    """Label repeated model names with their run folder (then a number, if that repeats too)."""
    counts: dict[str, int] = {}
    for p in points:
        counts[p.model] = counts.get(p.model, 0) + 1
    for p in points:
        if counts[p.model] > 1:
            run = p.sources.get("run_dir")
            p.label = f"{p.model} ({Path(run).name})" if run else f"{p.model} (#{p.sources.get('entry', '?')})"
    seen: dict[str, int] = {}
    for p in points:
        n = seen[p.label] = seen.get(p.label, 0) + 1
        if n > 1:
            p.label = f"{p.label} #{n}"


def load_latencies(paths: Sequence[str | Path], variant: str = "ours") -> dict[str, dict[str, Any]]:
    """{model: {latency_ms (per image), batch_size, source}} from ``cnnzoo bench --json`` reports:
    each model's infer row of ``variant`` (later files win)."""
    out: dict[str, dict[str, Any]] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such bench report (write one with `cnnzoo bench ... --json`)")
        text = path.read_text(encoding="utf-8").strip()
        try:  # `cnnzoo bench --json > FILE` leaves the table above the JSON line
            report = json.loads(text.splitlines()[-1] if text else "")
        except json.JSONDecodeError:
            report = _read_json(path)
        rows = report.get("results") if isinstance(report, dict) else None
        if not isinstance(rows, list):
            raise ValueError(f"{path}: not a `cnnzoo bench --json` report (no \"results\" list)")
        for r in rows:
            if r.get("mode") == "infer" and r.get("variant") == variant:
                model = str(r["model"]).removesuffix(".onnx")
                out[model] = dict(latency_ms=r["latency_ms_p50"] / r["batch_size"], batch_size=r["batch_size"],
                                  source=str(path))
    if not out:
        raise ValueError(f"{', '.join(map(str, paths))}: no infer rows of variant {variant!r}")
    return out


def with_latency(points: Sequence[ChartPoint], latencies: dict[str, dict[str, Any]]) -> list[ChartPoint]:
    """The points whose model the bench reports timed, each with its latency."""
    kept = []
    for p in points:
        if p.model in latencies:
            p.latency_ms = latencies[p.model]["latency_ms"]
            p.sources["latency"] = latencies[p.model]["source"]
            kept.append(p)
    return kept


# --------------------------------------------------------------------------------------------------
# Geometry of the PNG


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Tick values for a log axis from ``lo`` to ``hi``: the decades, or 1-2-5 steps (then every
    integer multiple) when the range holds fewer than three decades' ticks."""
    k0, k1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for mantissas in ((1,), (1, 2, 5), tuple(range(1, 10))):
        ticks = [round(m * 10.0 ** k, 12) for k in range(k0, k1 + 1) for m in mantissas]
        ticks = [t for t in ticks if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
        if len(ticks) >= 3:
            return ticks
    return ticks


def _limits(points: Sequence[ChartPoint], axis: str = "gmacs") -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis limits: at least a decade of GMACs or latency (log), with room for the bubbles and the
    labels on their right; top-1 padded by a tenth of its range (at least 3 points)."""
    a = math.log10(min(p.x(axis) for p in points))
    b = math.log10(max(p.x(axis) for p in points))
    if b - a < 1:
        mid = (a + b) / 2
        a, b = mid - 0.5, mid + 0.5
    span = b - a
    xlim = (10 ** (a - 0.12 * span), 10 ** (b + 0.25 * span))
    y0 = min(p.top1 for p in points)
    y1 = max(p.top1 for p in points)
    pad = max(3.0, 0.12 * (y1 - y0))
    return xlim, (max(0.0, y0 - pad), y1 + pad)


def _place_labels(anchors: Sequence[tuple[float, float, float]], widths: Sequence[float], height: float,
                  bounds: tuple[float, float, float, float]) -> list[tuple[float, float]]:
    """Greedy label placement in pixels (y pointing up): each label goes beside its bubble, right
    (else left), moved up or down in steps of its height until it overlaps no label placed before.

    ``anchors`` are (x, y, radius) of the bubbles, ``bounds`` (x0, y0, x1, y1) of the plot.
    Returns the lower-left corner of each label."""
    x0, y0, x1, y1 = bounds
    placed: list[tuple[float, float, float, float]] = []
    out: list[tuple[float, float]] = [(0.0, 0.0)] * len(anchors)
    order = sorted(range(len(anchors)), key=lambda i: (anchors[i][0], -anchors[i][1]))
    for i in order:
        x, y, r = anchors[i]
        w = widths[i]
        gap = 0.75 * r + 3.0  # clear of a small disc; tucked into a big one's bounding-box corner
        best = None
        for shift in (0, 1, -1, 2, -2, 3, -3, 4, -4):
            for side in (1, -1):
                lx = x + gap if side == 1 else x - gap - w
                ly = y - height / 2 + shift * height
                box = (lx, ly, lx + w, ly + height)
                inside = box[0] >= x0 and box[2] <= x1 and box[1] >= y0 and box[3] <= y1
                clear = all(box[2] <= b[0] or box[0] >= b[2] or box[3] <= b[1] or box[1] >= b[3] for b in placed)
                if inside and clear:
                    best = box
                    break
            if best:
                break
        if best is None:
            best = (x + gap, y - height / 2, x + gap + w, y + height / 2)
        placed.append(best)
        out[i] = (best[0], best[1])
    return out


def _nice_sizes(largest: int) -> list[int]:
    """Three round parameter counts for a size legend: the largest 1/2/5 x 10^k not above the
    biggest network, then a tenth and a hundredth of it."""
    k = math.floor(math.log10(largest))
    top = max(m * 10 ** k for m in (1, 2, 5) if m * 10 ** k <= largest)
    return [top, max(top // 10, 1), max(top // 100, 1)]


def _fmt_params(n: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def _fmt_gmacs(g: float) -> str:
    return f"{g:.4g}"


def _panel_titles(ours: Sequence[ChartPoint]) -> tuple[str, str]:
    datasets = sorted({p.dataset or "unknown dataset" for p in ours})
    return (f"Our runs: test top-1 on {', '.join(datasets)}",
            "Published: ImageNet-1k val top-1 (single crop)")


# --------------------------------------------------------------------------------------------------
# PNG

_AREA_MAX_PT2 = 1800.0  # marker area (points^2) of the largest network of a panel


def _x_label(axis: str, points: Sequence[ChartPoint]) -> str:
    if axis == "gmacs":
        return "GMACs per image (log scale)"
    return "measured ms per image (log scale)"


def render_png(ours: Sequence[ChartPoint], published: Sequence[ChartPoint], path: str | Path,
               x: str = "gmacs", subtitle: str = "") -> Path:
    """Both panels as one PNG (about 1300 x 560 pixels), written atomically; ``x``: "gmacs" or
    "latency" (ms per image); ``subtitle``: a line under the figure (e.g. the machine)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    dpi = 100
    fig = Figure(figsize=(13.0, 5.6), dpi=dpi)
    FigureCanvasAgg(fig)
    titles = _panel_titles(ours)
    rects = ((0.055, 0.11, 0.33, 0.8), (0.555, 0.11, 0.33, 0.8))
    colours = ("#1f77b4", "#d62728")
    for points, title, rect, colour in zip((ours, published), titles, rects, colours):
        if not points:  # a panel the bench report timed none of
            continue
        ax = fig.add_axes(rect)
        (xl, xh), (yl, yh) = _limits(points, x)
        ax.set_xscale("log")
        ax.set_xlim(xl, xh)
        ax.set_ylim(yl, yh)
        ticks = _log_ticks(xl, xh)
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.set_xticklabels([f"{t:g}" for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, color="#dddddd", linewidth=0.6)
        ax.set_axisbelow(True)
        ax.set_xlabel(_x_label(x, points))
        ax.set_ylabel("top-1 accuracy (%)")
        ax.set_title(title, fontsize=10.5)
        biggest = max(p.params for p in points)
        sizes = [_AREA_MAX_PT2 * p.params / biggest for p in points]
        xs, ys = [p.x(x) for p in points], [p.top1 for p in points]
        ax.scatter(xs, ys, s=sizes, color=colour, alpha=0.35, edgecolors=colour, linewidths=0.8)
        ax.scatter(xs, ys, s=4, color=colour)  # the centre, visible however small the bubble
        # Labels, placed in display pixels (y up) beside each bubble.
        disp = ax.transData.transform(list(zip(xs, ys)))
        px_per_pt = dpi / 72
        radii = [math.sqrt(s / math.pi) * px_per_pt for s in sizes]
        font_pt = 7.5
        widths = [len(p.label) * font_pt * 0.6 * px_per_pt for p in points]
        bbox = ax.get_window_extent()
        corners = _place_labels([(x, y, r) for (x, y), r in zip(disp, radii)], widths, font_pt * 1.3 * px_per_pt,
                                (bbox.x0, bbox.y0, bbox.x1, bbox.y1))
        inverse = ax.transData.inverted()
        for p, (cx, cy) in zip(points, corners):
            tx, ty = inverse.transform((cx, cy))
            ax.text(tx, ty, p.label, fontsize=font_pt, ha="left", va="bottom", color="#222222")
        # Size legend, outside the plot on the right.
        refs = _nice_sizes(biggest)
        handles = [ax.scatter([], [], s=_AREA_MAX_PT2 * n / biggest, color=colour, alpha=0.35, edgecolors=colour)
                   for n in refs]
        ax.legend(handles, [f"{_fmt_params(n)} params" for n in refs], title="bubble area", loc="upper left",
                  bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8, title_fontsize=8,
                  labelspacing=2.2, borderpad=1.2, handletextpad=1.5)
    if subtitle:
        fig.text(0.5, 0.01, subtitle, ha="center", va="bottom", fontsize=8, color="#555555")
    path = Path(path)
    _ensure_parent(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    return path


def _ensure_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(f"cannot create the folder of {path}: {exc.strerror or exc}") from exc


# --------------------------------------------------------------------------------------------------
# Interactive: a Plotly figure (the HTML page here, and the charts of `cnnzoo explore`)

_PLOTLY_JS = "plotly.min.js"
_MARKER_MAX_PX = 52.0  # diameter of the largest network's bubble, pixels


def _tip(p: ChartPoint) -> str:
    return "<br>".join(html.escape(line) for line in (
        p.label, f"top-1 {p.top1:.2f}%", f"{_fmt_gmacs(p.gmacs)} GMACs per image",
        f"{p.params:,} params ({_fmt_params(p.params)})", f"source: {p.source}"))


def plotly_figure(ours: Sequence[ChartPoint], published: Sequence[ChartPoint]) -> Any:
    """Both panels as one Plotly figure: log-scale GMACs, bubble area proportional to parameters
    (each panel scaled to its own largest network, as in the PNG), the figures on hover."""
    from plotly import graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=_panel_titles(ours), horizontal_spacing=0.08)
    for col, (points, colour) in enumerate(((ours, "#1f77b4"), (published, "#d62728")), start=1):
        biggest = max((p.params for p in points), default=1)
        fig.add_trace(go.Scatter(
            x=[p.gmacs for p in points], y=[p.top1 for p in points], mode="markers+text",
            name="our runs" if col == 1 else "published", text=[p.label for p in points],
            textposition="middle right", textfont=dict(size=10),
            hovertext=[_tip(p) for p in points], hoverinfo="text",
            marker=dict(size=[p.params for p in points], sizemode="area", sizemin=3, color=colour, opacity=0.45,
                        sizeref=biggest / _MARKER_MAX_PX ** 2, line=dict(color=colour, width=1))), row=1, col=col)
        fig.update_xaxes(type="log", tickformat="~g", title_text="GMACs per image (log scale)", row=1, col=col)
        fig.update_yaxes(title_text="top-1 accuracy (%)", row=1, col=col)
        if points:
            fig.add_annotation(text=f"bubble area: parameters (largest {_fmt_params(biggest)})", showarrow=False,
                               xref="x domain", yref="y domain", x=0.02, y=0.98, font=dict(size=10), row=1, col=col)
    fig.update_layout(template="plotly_white", showlegend=False, height=540, margin=dict(t=90, l=60, r=20, b=50),
                      title=dict(text="Top-1 accuracy against operations per image (Canziani et al. 2016, Fig. 2)",
                                 font=dict(size=15)))
    return fig


def render_html(ours: Sequence[ChartPoint], published: Sequence[ChartPoint], path: str | Path) -> Path:
    """The Plotly figure and a table of its points as an HTML page that works offline: Plotly's
    script is written beside it as plotly.min.js (once; several MB that pages share)."""
    from plotly.offline import get_plotlyjs

    e = html.escape
    rows = []
    for p in (*ours, *published):
        src = "; ".join(f"{k}: {v}" for k, v in p.sources.items()) if p.panel == "published" else p.source
        rows.append(f"<tr><td>{e(p.panel)}</td><td>{e(p.label)}</td><td>{e(p.dataset or '')}</td>"
                    f'<td class="num">{p.top1:.2f}</td><td class="num">{_fmt_gmacs(p.gmacs)}</td>'
                    f'<td class="num">{p.params:,}</td><td>{e(src)}</td></tr>')
    chart = plotly_figure(ours, published).to_html(full_html=False, include_plotlyjs="directory",
                                                   config={"displaylogo": False})
    doc = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cnnzoo compare: top-1 against GMACs</title>
<style>{_CSS}</style>
</head>
<body>
<p>After Canziani, Paszke and Culurciello 2016 (arXiv 1605.07678), Fig. 2. Bubble area is proportional
to the parameter count, each panel to its own scale. Point at a bubble for its figures.</p>
{chart}
<table>
<tr><th>panel</th><th>model</th><th>dataset</th><th>top-1 %</th><th>GMACs</th><th>params</th><th>source</th></tr>
{chr(10).join(rows)}
</table>
</body>
</html>
"""
    path = Path(path)
    _ensure_parent(path)
    script = path.parent / _PLOTLY_JS
    if not script.is_file():
        write_text(script, get_plotlyjs())
    write_text(path, doc)
    return path


_CSS = """
body { font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin-top: 1.5em; font-size: 12px; }
td, th { border-bottom: 1px solid #ddd; padding: 2px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


# --------------------------------------------------------------------------------------------------
# Library entry point and CLI


def compare(sources: Sequence[str | Path], out_png: str | Path | None = None,
            out_html: str | Path | None = None, *, x: str = "gmacs", bench: Sequence[str | Path] = (),
            bench_variant: str = "ours") -> dict[str, Any]:
    """Read the runs and leagues in ``sources``, draw the chart(s) asked for; ``x="latency"``
    takes the x axis from the ``bench`` reports' ``bench_variant`` rows (PNG only).

    Returns ``{"points": [...], "paths": {"png": ..., "html": ...}}``; each point is a
    :class:`ChartPoint` as a dict, ``panel`` "ours" or "published"."""
    if not sources:
        raise ValueError("no run or league folder given")
    if x not in X_AXES:
        raise ValueError(f"--x must be one of {', '.join(X_AXES)}, got {x!r}")
    if (x == "latency") != bool(bench):
        raise ValueError("--x latency needs a bench report (cnnzoo compare RUN --x latency BENCH.json), "
                         "and a bench report goes with --x latency only")
    if x == "latency" and out_html is not None:
        raise ValueError("the HTML chart is drawn against GMACs; with --x latency write the PNG (--out)")
    ours = load_points(sources)
    if not ours:
        raise ValueError(f"no runs found in {', '.join(map(str, sources))} (empty leaderboard?)")
    published = load_published()
    subtitle = ""
    if x == "latency":
        latencies = load_latencies(bench, bench_variant)
        ours, published = with_latency(ours, latencies), with_latency(published, latencies)
        if not ours:
            raise ValueError(f"the bench reports time none of the runs' models ({', '.join(sorted(latencies))} only); "
                             "bench them: cnnzoo bench MODEL ... --json")
        subtitle = _bench_subtitle(bench)
    paths: dict[str, str] = {}
    if out_png is not None:
        paths["png"] = str(render_png(ours, published, out_png, x=x, subtitle=subtitle))
    if out_html is not None:
        paths["html"] = str(render_html(ours, published, out_html))
    return {"points": [asdict(p) for p in (*ours, *published)], "paths": paths}


def _bench_subtitle(bench: Sequence[str | Path]) -> str:
    """Where and how the latencies were measured, from the first bench report."""
    text = Path(bench[0]).read_text(encoding="utf-8").strip()
    report = json.loads(text.splitlines()[-1])
    load = report.get("load_avg_start")
    return (f"latency: cnnzoo bench, {report.get('device_name', '?')}, {report.get('threads', '?')} threads, "
            f"batch {report.get('batch_size', '?')}, torch {report.get('torch', '?')}; median of interleaved iterations"
            + (f"; load average {load:.1f} on {report.get('cpu_count')} CPUs" if load is not None else ""))


def format_points(points: Sequence[dict[str, Any]]) -> str:
    """The plotted points as a text table."""
    cols = ["panel", "model", "dataset", "top-1 %", "GMACs", "ms/img", "params", "source"]
    text = []
    for p in points:
        src = p["source"] if len(p["source"]) <= 60 else p["source"][:59] + "…"
        ms = "-" if p.get("latency_ms") is None else f"{p['latency_ms']:.3g}"
        text.append([p["panel"], p["label"], p["dataset"] or "-", f"{p['top1']:.2f}", _fmt_gmacs(p["gmacs"]), ms,
                     f"{p['params']:,}", src])
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    right = {3, 4, 5, 6}
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cols, widths)))]
    for t in text:
        lines.append("  ".join(v.rjust(w) if i in right else v.ljust(w)
                               for i, (v, w) in enumerate(zip(t, widths))).rstrip())
    return "\n".join(lines)
