"""``cnnzoo degradation``: the degradation problem of deep plain networks, and what shortcuts do.

He et al. 2015 (Fig. 1 and 6) train plain networks of 20 and 56 layers and
the residual networks of the same layers and parameters (the shortcuts of option A have none), with
one recipe. The deeper *plain* net has the higher *training* error, so its trouble is optimisation,
not overfitting; with shortcuts, the deeper net is the better one. This module reruns that
experiment on a small dataset: ``plainD`` and ``resnetD`` for each depth D, each in its own run
folder ``OUT/<model>/`` (resumable like ``cnnzoo league``: a finished run is skipped, an interrupted
one continued, one with other settings is an error), then one figure of training error (dashed) and
test error (solid) per epoch, and the finding, computed from the runs' ``metrics.csv``.

The recipe is He et al.'s CIFAR one, shortened: SGD with momentum 0.9, weight decay 1e-4 (theirs),
random crops (padding 2 on 28x28 images, their 4 on 32x32 scaled down) and horizontal flips; a
cosine schedule instead of their steps at 32k/48k iterations, because a run of a few epochs has no
room for steps; one epoch of linear warm-up, the project's default, so that the peak learning rate
does not meet a freshly initialised 56-layer plain net at step one (He et al. warm up their
110-layer net the same way). Batch 32 at learning rate 0.05 instead of their 128 at 0.1: a CPU
budget buys a few thousand steps at most, and at 128 images per step a deep net has not got going
in that many. The test error is measured on a seeded 2,000-image subset of the test split after
every epoch (``test_subset``), which keeps evaluation to a small share of the run. The training
error is the one the trainer measures during each epoch, in training mode on augmented batches, as
in He et al.'s curves.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from cnnzoo.models.registry import list_models
from cnnzoo.studies.league import entry_state, run_entry
from cnnzoo.training.config import RECIPES, TrainConfig
from cnnzoo.utils.io import write_json

# He et al.'s CIFAR recipe, shortened: cnnzoo/training/recipes/degradation.toml (the module docstring gives each choice).
RECIPE: dict[str, Any] = RECIPES["degradation"]
DEFAULT_DEPTHS = (20, 56)
DEFAULT_EPOCHS = 10
DEFAULT_SUBSET = 6000
TRAIN_ERROR_NOTE = "training error: measured during each epoch (training mode, augmented batches)"

# One hue per kind (warm: plain, cool: residual), darker for deeper nets.
_PLAIN_COLOURS = ["#f4a261", "#e76f51", "#c1121f", "#780000"]
_RESNET_COLOURS = ["#90e0ef", "#00b4d8", "#0077b6", "#03045e"]


def available_depths() -> list[int]:
    """Depths with both a plain and a residual network registered."""
    plain = {int(n[5:]) for n in list_models("plain*") if n[5:].isdigit()}
    res = {int(n[6:]) for n in list_models("resnet*") if n[6:].isdigit()}
    return sorted(plain & res)


def degradation_models(depths: list[int]) -> list[str]:
    """``plainD`` and ``resnetD`` for each depth, shallowest first; unknown depths are a ValueError."""
    known = available_depths()
    bad = [d for d in depths if d not in known]
    if bad:
        raise ValueError(f"--depths {' '.join(map(str, bad))}: no plain/residual pair of that depth; "
                         f"available: {' '.join(map(str, known))}")
    if not depths:
        raise ValueError("--depths: give at least one depth")
    ordered = sorted(set(depths))
    return [f"{kind}{d}" for d in ordered for kind in ("plain", "resnet")]


def read_curves(run_dir: str | Path) -> dict[str, list[float]]:
    """Per-epoch training and test error (1 - top-1) of a run, from its metrics.csv."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics of a run there")
    rows = list(csv.DictReader(path.read_text().splitlines()))
    return dict(epoch=[int(r["epoch"]) for r in rows],
                train_error=[1.0 - float(r["train_top1"]) for r in rows],
                test_error=[1.0 - float(r["test_top1"]) for r in rows])


def _compare(kind: str, deep: str, shallow: str, curves: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    a, b = curves[deep]["train_error"][-1], curves[shallow]["train_error"][-1]
    ta, tb = curves[deep]["test_error"][-1], curves[shallow]["test_error"][-1]
    verdict = "worse" if a > b else "better" if a < b else "no different"
    text = (f"{deep} final training error {100 * a:.2f}% vs {shallow} {100 * b:.2f}%: the deeper {kind} net is "
            f"{verdict} (test error {100 * ta:.2f}% vs {100 * tb:.2f}%)")
    return dict(kind=kind, deeper=deep, shallower=shallow, deeper_train_error=a, shallower_train_error=b,
                deeper_test_error=ta, shallower_test_error=tb, deeper_is=verdict, text=text)


def _shortcuts(depth: int, curves: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    res, plain = f"resnet{depth}", f"plain{depth}"
    a, b = curves[res]["train_error"][-1], curves[plain]["train_error"][-1]
    verb = "lower" if a < b else "raise" if a > b else "do not change"
    text = (f"{res} final training error {100 * a:.2f}% vs {plain} {100 * b:.2f}%: shortcuts {verb} it"
            + (f" by {100 * abs(a - b):.2f} points" if a != b else ""))
    return dict(kind="shortcut", depth=depth, residual_train_error=a, plain_train_error=b, text=text)


def degradation_findings(curves: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """For each kind (plain, residual), each deeper net against the next shallower one, by final
    training error (the degradation problem is one of training, not of generalisation); then, at
    each depth, the residual net against the plain one."""
    findings = []
    depths_of: dict[str, list[int]] = {}
    for kind, prefix in (("plain", "plain"), ("residual", "resnet")):
        depths = sorted(int(m[len(prefix):]) for m in curves if m.startswith(prefix) and m[len(prefix):].isdigit())
        depths_of[prefix] = depths
        for shallow, deep in zip(depths, depths[1:]):
            findings.append(_compare(kind, f"{prefix}{deep}", f"{prefix}{shallow}", curves))
    for depth in sorted(set(depths_of["plain"]) & set(depths_of["resnet"])):
        findings.append(_shortcuts(depth, curves))
    return findings


def plot_degradation(curves: dict[str, dict[str, list[float]]], path: str | Path, title: str) -> Path:
    """Training error (dashed) and test error (solid) per epoch of every model on one figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=100)
    colour_of: dict[str, str] = {}
    for prefix, palette in (("plain", _PLAIN_COLOURS), ("resnet", _RESNET_COLOURS)):
        names = sorted((m for m in curves if m.startswith(prefix) and m[len(prefix):].isdigit()),
                       key=lambda m: int(m[len(prefix):]))
        first = 1 if len(names) <= 3 else 0  # shades spread out, the deepest the darkest
        for i, m in enumerate(names):
            step = (len(palette) - 1 - first) / max(1, len(names) - 1)
            colour_of[m] = palette[len(palette) - 1 if len(names) == 1 else first + round(i * step)]
    for m, c in curves.items():
        colour = colour_of.get(m, "grey")
        ax.plot(c["epoch"], [100 * e for e in c["train_error"]], "--", color=colour, linewidth=1.4)
        ax.plot(c["epoch"], [100 * e for e in c["test_error"]], "-", color=colour, linewidth=1.8, label=m)
    handles = [Line2D([], [], color=colour_of.get(m, "grey"), linewidth=1.8, label=m) for m in curves]
    handles += [Line2D([], [], color="black", linestyle="--", label="training error"),
                Line2D([], [], color="black", linestyle="-", label="test error")]
    ax.legend(handles=handles, fontsize=8, ncol=2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    test_note = f"; test error on {RECIPE['test_subset']:,} test images after each epoch."
    fig.text(0.01, 0.01, TRAIN_ERROR_NOTE.capitalize() + test_note, fontsize=7, color="dimgrey")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def degradation_title(dataset: str, subset: int | None, epochs: int) -> str:
    subset_text = f", subset of {subset:,} training images" if subset else ""
    return f"Plain vs residual nets on {dataset}{subset_text}, {epochs} epochs"


def run_degradation(depths: list[int] | tuple[int, ...] = DEFAULT_DEPTHS, *, epochs: int = DEFAULT_EPOCHS,
                    subset: int | None = DEFAULT_SUBSET, dataset: str = "fashion-mnist", data_dir: str | None = None,
                    threads: int | None = None, seed: int = 0, out: str | Path = "runs/degradation",
                    plot: str | Path | None = None, device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Train (or skip, or continue) ``plainD`` and ``resnetD`` for each depth with one recipe; write
    ``out/degradation.json`` and the figure (``plot``, default ``out/degradation.png``)."""
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    if subset is not None and subset < 1:
        raise ValueError(f"--subset must be >= 1, got {subset}")
    models = degradation_models(list(depths))
    out = Path(out)
    configs = [TrainConfig.from_recipe("degradation", model=m, dataset=dataset, data_dir=data_dir, epochs=epochs,
                                       train_subset=subset, seed=seed, threads=threads, device=device, out=str(out / m))
               for m in models]
    for cfg in configs:  # every entry already on disk checked before any training time is spent
        entry_state(cfg)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, Any]] = {}
    for cfg in configs:
        if progress:
            print(f"== {cfg.model}: {epochs} epoch(s) -> {cfg.out}", flush=True)
        summary, done = run_entry(cfg, progress=progress)
        runs[cfg.model] = dict(status=done, train_seconds=summary["train_seconds"], params=summary["params"],
                               train_images=summary["train_images"], run_dir=summary["run_dir"])
    curves = {m: read_curves(out / m) for m in models}
    findings = degradation_findings(curves)
    # A subset at least as large as the training set is the whole set: the title says what was used.
    used_subset = subset if subset and all(r["train_images"] == subset for r in runs.values()) else None
    title = degradation_title(dataset, used_subset, epochs)
    plot_path = plot_degradation(curves, Path(plot) if plot else out / "degradation.png", title)
    result = dict(
        settings=dict(depths=sorted(set(depths)), epochs=epochs, subset=subset, dataset=dataset, data_dir=data_dir,
                      seed=seed, threads=threads, device=device, recipe=RECIPE, train_error=TRAIN_ERROR_NOTE),
        models={m: dict(**runs[m], **curves[m], final_train_error=curves[m]["train_error"][-1],
                        final_test_error=curves[m]["test_error"][-1]) for m in models},
        findings=findings, plot=str(plot_path), title=title)
    write_json(out / "degradation.json", result)
    return result


def format_degradation(result: dict[str, Any]) -> str:
    lines = [result["title"], "",
             f"{'model':<10} {'params':>9} {'final train err':>16} {'final test err':>15} {'best test err':>14}"]
    for m, r in result["models"].items():
        lines.append(f"{m:<10} {r['params']:>9,} {100 * r['final_train_error']:>15.2f}% "
                     f"{100 * r['final_test_error']:>14.2f}% {100 * min(r['test_error']):>13.2f}%")
    lines.append("")
    lines += [f["text"] for f in result["findings"]]
    if len(result["settings"]["depths"]) < 2:
        lines.append("one depth only: no deeper net to compare with")
    lines.append(f"({TRAIN_ERROR_NOTE}; figure: {result['plot']})")
    return "\n".join(lines)
