"""``cnnzoo experiment``: the design arguments of the networks, tested on Fashion-MNIST.

Each network of the zoo was an argument: two 3x3 convolutions instead of one 5x5 (VGG), batch norm
making dropout less needed (Inception v2), more groups instead of more width (ResNeXt), channel
attention for a few parameters (SENet), depthwise-separable convolutions and the two knobs of
MobileNet, width and resolution. An experiment states the argument as a question, trains its
variants with one recipe and several seeds, and computes its finding from the numbers: each claim
("A is more accurate than B") holds, does not hold, or is within noise, judged by the difference of
the mean test top-1 against its standard error over seeds, sqrt(s_A^2 / n_A + s_B^2 / n_B): a
difference beyond twice that is taken as real.

Runs go to ``OUT/NAME/VARIANT/seedK/`` and are resumable as ``cnnzoo league``'s entries: a finished
run is skipped, an interrupted one continued, one with other settings is an error naming them.
The result is ``RESULTS/NAME.json`` (each run with the ``cnnzoo train`` command that reproduces it)
and the figure ``RESULTS/NAME.png``.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnzoo.analysis import count_macs
from cnnzoo.models.factory import create_model
from cnnzoo.studies.degradation import read_curves
from cnnzoo.studies.league import entry_state, run_entry
from cnnzoo.training.config import RECIPES, TrainConfig, train_command
from cnnzoo.training.loggers import LogGroup
from cnnzoo.utils.io import write_json

# A claim's difference must exceed this many standard errors to count as real (about 95% for a
# normal difference of means).
NOISE_FACTOR = 2.0


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment: the TrainConfig settings it sets on top of the recipe, the plot
    series it belongs to, and the paper's figures for it (ImageNet), where the paper gives them."""
    name: str
    settings: dict[str, Any]
    series: tuple[str, ...] = ()
    paper: dict[str, Any] | None = None


@dataclass(frozen=True)
class Claim:
    """``better`` is more accurate than ``worse`` (kind "better"), or at most ``tolerance`` less
    accurate (kind "no-worse": what an argument of "as good, for less" needs)."""
    better: str
    worse: str
    text: str
    kind: str = "better"
    tolerance: float = 0.0


@dataclass(frozen=True)
class Experiment:
    name: str
    question: str
    recipe: dict[str, Any]     # TrainConfig settings shared by every variant
    variants: tuple[Variant, ...]
    claims: tuple[Claim, ...]
    plot: str = "bars"         # "bars": accuracy per variant; "macs": accuracy against MACs
    curves: bool = False       # also the training curves (per epoch, mean over seeds)


# The recipes the experiments start from (cnnzoo/training/recipes/experiments*.toml, each value with its
# reason); every experiment sets its epochs and training subset on top, so that its runs take about
# an hour on a quiet 2-core CPU, from the training speeds of the CPU benchmarks (BENCHMARKS.md: about
# 190 GFLOP/s for dense convolutions, 309 img/s for mobilenet_v1_cifar).
BASE_RECIPE: dict[str, Any] = RECIPES["experiments"]
ONE_CYCLE_RECIPE: dict[str, Any] = RECIPES["experiments-one-cycle"]


def _vgg(**kwargs: Any) -> dict[str, Any]:
    return dict(model="vgg_mini", model_kwargs=kwargs)


def _mobilenet(width: float, size: int, separable: bool = True) -> dict[str, Any]:
    kwargs: dict[str, Any] = dict(width_mult=width) if separable else dict(width_mult=width, separable=False)
    return dict(model="mobilenet_v1_cifar", model_kwargs=kwargs, input_size=(1, size, size))


def _paper(table: str, name: str, top1: float, macs: float, params: float) -> dict[str, Any]:
    """A row of Howard et al.: ImageNet top-1, mult-adds and parameters as the paper prints them."""
    return dict(table=table, model=name, imagenet_top1=top1, macs=macs, params=params)


_MOBILENET_224 = _paper("4, 6, 7", "1.0 MobileNet-224", 0.706, 569e6, 4.2e6)

EXPERIMENTS: dict[str, Experiment] = {e.name: e for e in (
    Experiment(
        "stack3x3",
        "Do two 3x3 convolutions (Simonyan & Zisserman 2014, section 2.3) or a 1x5 then a 5x1 (Szegedy et al. "
        "2016, section 3.2) beat one 5x5 with the same receptive field, in a small VGG?",
        dict(BASE_RECIPE, epochs=5),
        (Variant("5x5", _vgg(unit="5x5", batch_norm=True, drop_rate=0.0)),
         Variant("3x3-3x3", _vgg(unit="3x3", batch_norm=True, drop_rate=0.0)),
         Variant("1x5-5x1", _vgg(unit="1x5", batch_norm=True, drop_rate=0.0))),
        (Claim("3x3-3x3", "5x5", "two 3x3 convolutions are more accurate than one 5x5"),
         Claim("1x5-5x1", "5x5", "a 1x5 then a 5x1 convolution is more accurate than one 5x5"))),
    Experiment(
        "bn-dropout",
        "Does batch norm make dropout less needed (Ioffe & Szegedy 2015, section 4.2.1)? The same small VGG "
        "with batch norm, with dropout 0.5 in the classifier, with both, with neither.",
        dict(BASE_RECIPE, epochs=6, train_subset=30000),
        (Variant("neither", _vgg(unit="3x3", batch_norm=False, drop_rate=0.0)),
         Variant("dropout", _vgg(unit="3x3", batch_norm=False, drop_rate=0.5)),
         Variant("bn", _vgg(unit="3x3", batch_norm=True, drop_rate=0.0)),
         Variant("both", _vgg(unit="3x3", batch_norm=True, drop_rate=0.5))),
        (Claim("bn", "neither", "batch norm makes the network more accurate"),
         Claim("bn", "dropout", "batch norm alone is at least as accurate as dropout alone", kind="no-worse"),
         Claim("bn", "both", "with batch norm, adding dropout does not help", kind="no-worse")),
        curves=True),
    Experiment(
        "cardinality",
        "At (about) equal parameters, do more groups beat more width (Xie et al. 2016, Table 3)? A one-block-"
        "per-stage ResNeXt at 1x64d, 2x40d, 4x24d and 8x14d.",
        dict(BASE_RECIPE, epochs=4, train_subset=15000),
        tuple(Variant(f"{c}x{d}d", dict(model="resnext11_cifar", model_kwargs=dict(groups=c, base_width=d)))
              for c, d in ((1, 64), (2, 40), (4, 24), (8, 14))),
        tuple(Claim(f"{c}x{d}d", "1x64d", f"cardinality {c} is more accurate than 1 at equal parameters")
              for c, d in ((2, 40), (4, 24), (8, 14)))),
    Experiment(
        "se",
        "Does squeeze-and-excitation (Hu et al. 2017) improve a ResNet for a few parameters, at reduction 16 "
        "and 4? resnet20 against seresnet20.",
        dict(ONE_CYCLE_RECIPE, epochs=3),
        (Variant("none", dict(model="resnet20", model_kwargs={})),
         Variant("se-r16", dict(model="seresnet20", model_kwargs=dict(se_reduction=16))),
         Variant("se-r4", dict(model="seresnet20", model_kwargs=dict(se_reduction=4)))),
        (Claim("se-r16", "none", "SE (reduction 16) makes the ResNet more accurate"),
         Claim("se-r4", "none", "SE (reduction 4) makes the ResNet more accurate"),
         Claim("se-r4", "se-r16", "reduction 4 is at least as accurate as 16 (Hu et al. Table 10)", kind="no-worse"))),
    Experiment(
        "mobilenet",
        "How do MobileNet's width multiplier and input resolution trade accuracy for operations (Howard et al. "
        "2017, Tables 6-7), and what do depthwise-separable convolutions cost against full ones (Table 4)?",
        dict(ONE_CYCLE_RECIPE, epochs=2, train_subset=15000, test_subset=5000, eval_every=0),
        (Variant("1.0-32", _mobilenet(1.0, 32), ("width", "resolution", "separable"), _MOBILENET_224),
         Variant("0.75-32", _mobilenet(0.75, 32), ("width",), _paper("6", "0.75 MobileNet-224", 0.684, 325e6, 2.6e6)),
         Variant("0.5-32", _mobilenet(0.5, 32), ("width",), _paper("6", "0.5 MobileNet-224", 0.637, 149e6, 1.3e6)),
         Variant("0.25-32", _mobilenet(0.25, 32), ("width",), _paper("6", "0.25 MobileNet-224", 0.506, 41e6, 0.5e6)),
         Variant("1.0-28", _mobilenet(1.0, 28), ("resolution",), _paper("7", "1.0 MobileNet-192", 0.691, 418e6, 4.2e6)),
         Variant("1.0-24", _mobilenet(1.0, 24), ("resolution",), _paper("7", "1.0 MobileNet-160", 0.672, 290e6, 4.2e6)),
         Variant("1.0-20", _mobilenet(1.0, 20), ("resolution",), _paper("7", "1.0 MobileNet-128", 0.644, 186e6, 4.2e6)),
         Variant("1.0-32-full", _mobilenet(1.0, 32, separable=False), ("separable",),
                 _paper("4", "Conv MobileNet", 0.717, 4866e6, 29.3e6))),
        (Claim("1.0-32", "0.75-32", "width 1.0 is more accurate than 0.75"),
         Claim("0.75-32", "0.5-32", "width 0.75 is more accurate than 0.5"),
         Claim("0.5-32", "0.25-32", "width 0.5 is more accurate than 0.25"),
         Claim("1.0-32", "1.0-28", "input 32 is more accurate than 28"),
         Claim("1.0-28", "1.0-24", "input 28 is more accurate than 24"),
         Claim("1.0-24", "1.0-20", "input 24 is more accurate than 20"),
         Claim("1.0-32", "1.0-32-full", "depthwise-separable convolutions lose at most 1.1 points against full "
               "ones (the paper's ImageNet margin)", kind="no-worse", tolerance=0.011)),
        plot="macs"),
)}


def list_experiments() -> list[str]:
    return list(EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        close = difflib.get_close_matches(name, list(EXPERIMENTS), n=3, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown experiment {name!r}.{hint} Known: {', '.join(EXPERIMENTS)}")
    return EXPERIMENTS[name]


# --------------------------------------------------------------------------------------------------
# Runs: their settings and the command that reproduces each


def run_config(experiment: Experiment, variant: Variant, seed: int, out: str | Path, *, epochs: int | None = None,
               **overrides: Any) -> TrainConfig:
    """The TrainConfig of one run: the recipe, the variant's settings, then ``epochs`` and
    ``overrides`` (data_dir, threads, device; a smaller training subset for a quick check)."""
    settings = {**experiment.recipe, **variant.settings, **overrides, "seed": seed,
                "out": str(Path(out) / experiment.name / variant.name / f"seed{seed}")}
    if epochs is not None:
        settings["epochs"] = epochs
    return TrainConfig(**settings)


def recorded_out(out: str | Path) -> str:
    """The run folder a recorded command names: relative to the working directory (the repository,
    for the committed results), so the command means the same on every machine; a folder outside it
    is recorded under the default root, ``runs/experiments/NAME/VARIANT/seedS``."""
    path = Path(out)
    if not path.is_absolute():
        return str(path)
    if path.resolve().is_relative_to(Path.cwd().resolve()):
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    return str(Path("runs/experiments", *path.parts[-3:]))


# --------------------------------------------------------------------------------------------------
# Numbers: variant statistics and claims


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); 0.0 for a single value."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def judge(claim: Claim, better: dict[str, Any], worse: dict[str, Any]) -> dict[str, Any]:
    """The verdict on ``claim`` from the two variants' top1_mean, top1_std and run counts: the
    difference of means against NOISE_FACTOR standard errors of that difference."""
    n_a, n_b = len(better["runs"]), len(worse["runs"])
    diff = better["top1_mean"] - worse["top1_mean"]
    noise = math.sqrt(better["top1_std"] ** 2 / n_a + worse["top1_std"] ** 2 / n_b) if min(n_a, n_b) > 1 else None
    if noise is None:
        verdict = "not judged (one seed: no spread)"
    elif claim.kind == "no-worse":
        verdict = "does not hold" if diff + claim.tolerance < -NOISE_FACTOR * noise else "holds"
    elif claim.kind == "better":
        verdict = ("holds" if diff > NOISE_FACTOR * noise else
                   "does not hold" if diff < -NOISE_FACTOR * noise else "within noise")
    else:
        raise ValueError(f"claim kind must be 'better' or 'no-worse', got {claim.kind!r}")
    spread = "no spread (one seed)" if noise is None else f"standard error {100 * noise:.2f}"
    text = (f"{claim.text}: {better['name']} {100 * better['top1_mean']:.2f}% vs {worse['name']} "
            f"{100 * worse['top1_mean']:.2f}% ({100 * diff:+.2f} points, {spread}"
            f"{f', tolerance {100 * claim.tolerance:.1f}' if claim.tolerance else ''}): {verdict}")
    return dict(claim=claim.text, better=claim.better, worse=claim.worse, kind=claim.kind, tolerance=claim.tolerance,
                difference=diff, standard_error=noise, verdict=verdict, text=text)


def finding(experiment: Experiment, variants: list[dict[str, Any]]) -> dict[str, Any]:
    """Every claim of the experiment judged on the variants' numbers; ``holds``: all claims hold."""
    by_name = {v["name"]: v for v in variants}
    judged = [judge(c, by_name[c.better], by_name[c.worse]) for c in experiment.claims]
    held = sum(j["verdict"] == "holds" for j in judged)
    return dict(holds=held == len(judged), claims=judged,
                text=f"{held} of {len(judged)} claims hold. " + " ".join(j["text"] + "." for j in judged))


def variant_cost(cfg: TrainConfig, input_size: list[int], num_classes: int) -> tuple[int, int]:
    """(parameters, MACs per image at ``input_size``) of the variant's network."""
    with torch.device("meta"):  # shapes and counts only
        model = create_model(cfg.model, num_classes=num_classes, in_chans=input_size[0], **cfg.model_kwargs)
    return sum(p.numel() for p in model.parameters()), count_macs(model, tuple(input_size))


def summarize_variant(variant: Variant, configs: list[TrainConfig], summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """A variant's entry of NAME.json: cost, mean and spread of test top-1, and its runs."""
    classes = json.loads((Path(summaries[0]["run_dir"]) / "config.json").read_text())["classes"]
    params, macs = variant_cost(configs[0], summaries[0]["input_size"], len(classes))
    mean, std = mean_std([s["test_top1"] for s in summaries])
    runs = [dict(seed=c.seed, test_top1=s["test_top1"], train_seconds=s["train_seconds"],
                 command=train_command(dataclasses.replace(c, out=recorded_out(c.out))))
            for c, s in zip(configs, summaries)]
    entry = dict(name=variant.name, params=params, macs=macs, top1_mean=mean, top1_std=std, runs=runs)
    if variant.paper:
        entry["paper"] = variant.paper
    return entry


# --------------------------------------------------------------------------------------------------
# The figure


def _errorbar(ax: Any, xs: list[float], variants: list[dict[str, Any]], **style: Any) -> None:
    """Mean test top-1 with the seeds' standard deviation, and each seed's value as a small dot."""
    ax.errorbar(xs, [100 * v["top1_mean"] for v in variants], yerr=[100 * v["top1_std"] for v in variants],
                capsize=4, **style)
    for x, v in zip(xs, variants):
        ax.plot([x] * len(v["runs"]), [100 * r["test_top1"] for r in v["runs"]], ".", color="grey", markersize=4)


def _plot_points(ax: Any, variants: list[dict[str, Any]]) -> None:
    xs = list(range(len(variants)))
    _errorbar(ax, xs, variants, fmt="o", color="#0077b6")
    ax.set_xticks(xs, [f"{v['name']}\n{v['params'] / 1e3:,.0f}k params\n{v['macs'] / 1e6:.1f}M MACs" for v in variants],
                  fontsize=8)
    ax.set_xlim(-0.5, len(xs) - 0.5)


def _plot_series(ax: Any, experiment: Experiment, variants: list[dict[str, Any]], paper: bool) -> None:
    """Accuracy against MACs (log scale), one line per series of variants; ``paper``: the paper's
    ImageNet figures of the same variants instead of ours."""
    spec = {v.name: v for v in experiment.variants}
    series = list(dict.fromkeys(s for v in experiment.variants for s in v.series))
    for colour, name in zip(("#0077b6", "#e76f51", "#2a9d8f", "#8d99ae"), series):
        members = sorted((v for v in variants if name in spec[v["name"]].series),
                         key=lambda v: v["paper"]["macs"] if paper else v["macs"])
        if paper:
            ax.plot([v["paper"]["macs"] for v in members], [100 * v["paper"]["imagenet_top1"] for v in members],
                    "o-", color=colour, label=name)
        else:
            _errorbar(ax, [v["macs"] for v in members], members, fmt="o-", color=colour, label=name)
    for v in variants:
        x, y = (v["paper"]["macs"], v["paper"]["imagenet_top1"]) if paper else (v["macs"], v["top1_mean"])
        ax.annotate(v["paper"]["model"] if paper else v["name"], (x, 100 * y), fontsize=7,
                    xytext=(4, -10), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("multiply-adds per image" + (" (paper, 224x224 ImageNet)" if paper else ""))
    ax.legend(fontsize=8)


def _plot_curves(ax: Any, curves: dict[str, list[dict[str, list[float]]]]) -> None:
    """Test error (solid) and training error (dashed) per epoch, each the mean over seeds."""
    for colour, (name, runs) in zip(("#6c757d", "#e76f51", "#0077b6", "#2a9d8f", "#8338ec"), curves.items()):
        epochs = runs[0]["epoch"]
        for key, style in (("test_error", "-"), ("train_error", "--")):
            mean = [100 * sum(r[key][i] for r in runs) / len(runs) for i in range(len(epochs))]
            ax.plot(epochs, mean, style, marker=".", color=colour, label=name if style == "-" else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%): test solid, training dashed")
    ax.legend(fontsize=8)


def plot_experiment(experiment: Experiment, result: dict[str, Any], curves: dict[str, list[dict[str, list[float]]]],
                    path: str | Path) -> Path:
    """Our accuracy per variant (against MACs for a "macs" experiment), the training curves of a
    ``curves`` experiment, and the paper's ImageNet figures where the variants carry them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    variants = result["variants"]
    with_paper = all("paper" in v for v in variants)
    panels = 1 + experiment.curves + with_paper
    fig, axes = plt.subplots(1, panels, figsize=(5.6 * panels, 4.6), dpi=100, squeeze=False)
    ax = axes[0][0]
    if experiment.plot == "macs":
        _plot_series(ax, experiment, variants, paper=False)
    else:
        _plot_points(ax, variants)
    seeds = max(len(v["runs"]) for v in variants)
    ax.set_ylabel(f"Fashion-MNIST test top-1 (%), mean and std of {seeds} seed(s)")
    if experiment.curves:
        _plot_curves(axes[0][1], curves)
    if with_paper:
        _plot_series(axes[0][-1], experiment, variants, paper=True)
        axes[0][-1].set_ylabel("ImageNet top-1 (%), as published")
    for a in axes[0]:
        a.grid(alpha=0.3)
    held = sum(c["verdict"] == "holds" for c in result["finding"]["claims"])
    fig.suptitle(f"{experiment.name}: {held} of {len(experiment.claims)} claims hold", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------------------------------
# The driver


def run_experiment(name: str, *, seeds: int = 3, epochs: int | None = None, out: str | Path = "runs/experiments",
                   results: str | Path = "docs/experiments", progress: bool = True,
                   **overrides: Any) -> dict[str, Any]:
    """Train (or skip, or continue) every run of experiment ``name`` (each variant with seeds
    0 .. ``seeds`` - 1), then write ``results/NAME.json`` and ``results/NAME.png`` and return the
    result. ``overrides`` are TrainConfig settings for every run (data_dir, threads, device, or a
    smaller training subset for a quick check of the pipeline; log and log_every: TensorBoard's
    ``--logdir OUT/NAME`` overlays the runs, MLflow gets one experiment for them)."""
    experiment = get_experiment(name)
    if seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {seeds}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    plan = [(v, [run_config(experiment, v, seed, out, epochs=epochs, **overrides) for seed in range(seeds)])
            for v in experiment.variants]
    for _, configs in plan:  # every run already on disk checked before any training time is spent
        for cfg in configs:
            entry_state(cfg)
    variants, curves = [], {}
    group = LogGroup(Path(out) / experiment.name, f"experiment {experiment.name}")
    for variant, configs in plan:
        summaries = []
        for cfg in configs:
            if progress:
                print(f"== {experiment.name} / {variant.name} / seed {cfg.seed} -> {cfg.out}", flush=True)
            summary, done = run_entry(cfg, progress=progress, log_group=group)
            if progress:
                print(f"{variant.name} seed {cfg.seed}: test top-1 {summary['test_top1']:.4f} ({done})", flush=True)
            summaries.append(summary)
        variants.append(summarize_variant(variant, configs, summaries))
        curves[variant.name] = [read_curves(cfg.out) for cfg in configs]
    shared = {k: v for k, v in dataclasses.asdict(plan[0][1][0]).items()
              if k not in ("model", "model_kwargs", "input_size", "seed", "out")}
    result = dict(name=experiment.name, question=experiment.question, recipe=shared, seeds=seeds, variants=variants,
                  finding=finding(experiment, variants))
    results = Path(results)
    results.mkdir(parents=True, exist_ok=True)
    write_json(results / f"{experiment.name}.json", result)
    plot_experiment(experiment, result, curves, results / f"{experiment.name}.png")
    return result


def format_experiment(result: dict[str, Any]) -> str:
    lines = [f"{result['name']}: {result['question']}", "",
             f"{'variant':<12} {'params':>10} {'MMACs':>8} {'test top-1':>17} {'seeds':>5}"]
    for v in result["variants"]:
        lines.append(f"{v['name']:<12} {v['params']:>10,} {v['macs'] / 1e6:>8.1f} "
                     f"{100 * v['top1_mean']:>8.2f} +- {100 * v['top1_std']:.2f}% {len(v['runs']):>5}")
    lines.append("")
    lines += [c["text"] for c in result["finding"]["claims"]]
    return "\n".join(lines)


def format_list() -> str:
    return "\n".join(f"{e.name:<12} {len(e.variants)} variants: {e.question}" for e in EXPERIMENTS.values())
