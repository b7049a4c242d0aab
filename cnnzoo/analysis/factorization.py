"""Factorised convolutions: one k x k convolution against a stack of 3 x 3 ones (VGG) and against a
1 x k + k x 1 pair (Inception v3), in weights, MACs and non-linearities, and a plot of the comparison."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from cnnzoo.analysis.geometry import Pair, conv_output_size
from cnnzoo.analysis.tables import fmt_pair, table


@dataclass
class FactorOption:
    """One way of covering a k x k receptive field. ``layers`` lists (kh, kw, c_in, c_out, out_h,
    out_w) for each convolution (stride 1, no padding); the ratios compare with the k x k."""

    name: str
    layers: list[tuple[int, int, int, int, int, int]]
    receptive_field: Pair
    output_size: Pair
    weights: int
    params: int
    macs: int
    nonlinearities: int
    weight_ratio: Fraction
    param_ratio: float
    mac_ratio: float


@dataclass
class FactorizeResult:
    kernel: int
    channels_in: int
    channels_out: int
    size: int
    bias: bool
    options: list[FactorOption]


def _option(name: str, layers: list[tuple[int, int, int, int]], size: int, bias: bool) -> dict[str, Any]:
    h = w = size
    rf_h = rf_w = 1
    weights = biases = macs = 0
    rows = []
    for kh, kw, cin, cout in layers:
        h, w = conv_output_size(h, kh), conv_output_size(w, kw)
        rf_h, rf_w = rf_h + kh - 1, rf_w + kw - 1
        weights += cin * cout * kh * kw
        biases += cout if bias else 0
        macs += cin * cout * kh * kw * h * w
        rows.append((kh, kw, cin, cout, h, w))
    return dict(name=name, layers=rows, receptive_field=(rf_h, rf_w), output_size=(h, w), weights=weights,
                params=weights + biases, macs=macs, nonlinearities=len(layers))


def factorize(
    kernel: int, channels_in: int, channels_out: int | None = None, size: int = 32, bias: bool = True
) -> FactorizeResult:
    """Compare one ``kernel`` x ``kernel`` convolution with the two factorisations of the same
    receptive field:

    - a stack of (k - 1) / 2 3 x 3 convolutions (Simonyan & Zisserman 2014: two 3x3 see 5x5, three
      see 7x7), the first ``channels_in -> channels_out``, the others ``channels_out -> channels_out``;
    - a 1 x k followed by a k x 1 convolution (Szegedy et al. 2016, Inception v3), likewise.

    Every convolution has stride 1, no padding and (with ``bias``) a bias, and is followed by a
    non-linearity; ``size`` is the input's height and width (32 -> 28 for 5x5 or two 3x3). With
    ``channels_in == channels_out`` the weight ratios are 9 (k-1)/2 / k^2 (18/25 for k = 5, 27/49 for
    k = 7) and 2/k. The MAC ratios differ a little from the weight ratios because without padding
    the first layers of a stack work on larger maps; with "same" padding they would be equal.
    """
    channels_out = channels_in if channels_out is None else channels_out
    checks = (("kernel", kernel, 3), ("channels_in", channels_in, 1), ("channels_out", channels_out, 1))
    for arg, value, low in checks:
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
    if kernel % 2 == 0:
        raise ValueError(f"kernel must be odd (a stack of 3x3 convolutions covers 3, 5, 7, ...), got {kernel}")
    if not isinstance(size, int) or size < kernel:
        raise ValueError(f"size must be an integer >= kernel ({kernel}), got {size!r}")
    k, ci, co, m = kernel, channels_in, channels_out, (kernel - 1) // 2
    specs = [
        (f"{k}x{k}", [(k, k, ci, co)]),
        (f"{m} x 3x3" if m > 1 else "3x3", [(3, 3, ci if i == 0 else co, co) for i in range(m)]),
        (f"1x{k} + {k}x1", [(1, k, ci, co), (k, 1, co, co)]),
    ]
    raw = [_option(name, layers, size, bias) for name, layers in specs]
    base = raw[0]
    options = [
        FactorOption(
            **r,
            weight_ratio=Fraction(r["weights"], base["weights"]),
            param_ratio=r["params"] / base["params"],
            mac_ratio=r["macs"] / base["macs"],
        )
        for r in raw
    ]
    return FactorizeResult(kernel, ci, co, size, bias, options)


def factorize_to_json(result: FactorizeResult) -> dict[str, Any]:
    opts = []
    for o in result.options:
        opts.append(
            dict(
                name=o.name,
                layers=[
                    dict(kernel=[kh, kw], channels_in=ci, channels_out=co, output=[h, w])
                    for kh, kw, ci, co, h, w in o.layers
                ],
                receptive_field=list(o.receptive_field), output_size=list(o.output_size), weights=o.weights,
                params=o.params, macs=o.macs, nonlinearities=o.nonlinearities,
                weight_ratio=float(o.weight_ratio), weight_ratio_fraction=str(o.weight_ratio),
                param_ratio=o.param_ratio, mac_ratio=o.mac_ratio,
            )
        )
    return dict(kernel=result.kernel, channels_in=result.channels_in, channels_out=result.channels_out,
                size=result.size, bias=result.bias, options=opts)


def format_factorize(result: FactorizeResult) -> str:
    header = ["Option", "Layers", "RF", "Output", "Weights", "Params", "MACs", "Non-lin.", "Weights/kxk", "MACs/kxk"]
    rows = []
    for o in result.options:
        layers = " -> ".join(f"{kh}x{kw}" for kh, kw, *_ in o.layers)
        frac = f"{float(o.weight_ratio):.3f} ({o.weight_ratio})" if o.weight_ratio != 1 else "1"
        rows.append([
            o.name, layers, fmt_pair(o.receptive_field), fmt_pair(o.output_size), f"{o.weights:,}", f"{o.params:,}",
            f"{o.macs:,}", str(o.nonlinearities), frac, f"{o.mac_ratio:.3f}",
        ])
    bias = "with biases" if result.bias else "without biases"
    lines = [
        f"Receptive field {result.kernel}x{result.kernel}: {result.channels_in} -> {result.channels_out} channels, "
        f"input {result.size}x{result.size}, stride 1, no padding, {bias}"
    ]
    lines += table(header, rows, right={2, 3, 4, 5, 6, 7, 8, 9})
    lines.append("Weights/kxk is exact (without biases); each convolution is followed by one non-linearity.")
    return "\n".join(lines)


def plot_factorize(result: FactorizeResult, path: str | Path) -> Path:
    """Bar chart (PNG) of parameters and MACs relative to the k x k convolution, and the number of
    non-linearities, for each option. Uses matplotlib's Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    names = [o.name for o in result.options]
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    xs = range(len(names))
    width = 0.38
    b1 = ax1.bar([x - width / 2 for x in xs], [o.param_ratio for o in result.options], width, label="parameters")
    b2 = ax1.bar([x + width / 2 for x in xs], [o.mac_ratio for o in result.options], width, label="MACs")
    ax1.bar_label(b1, fmt="%.2f", fontsize=8)
    ax1.bar_label(b2, fmt="%.2f", fontsize=8)
    ax1.set_xticks(list(xs), names)
    ax1.set_ylabel(f"relative to one {result.kernel}x{result.kernel}")
    ax1.set_ylim(0, 1.2)
    ax1.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax1.legend(loc="upper right", fontsize=8)
    title = f"Cost, {result.channels_in}->{result.channels_out} channels, {result.size}x{result.size} input"
    ax1.set_title(title, fontsize=10)
    b3 = ax2.bar(list(xs), [o.nonlinearities for o in result.options], color="tab:green")
    ax2.bar_label(b3, fontsize=8)
    ax2.set_xticks(list(xs), names, fontsize=8)
    ax2.set_title("Non-linearities", fontsize=10)
    ax2.set_ylim(0, max(o.nonlinearities for o in result.options) + 1)
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path
