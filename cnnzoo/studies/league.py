"""``cnnzoo league``: every family trained with one recipe on one dataset, side by side.

Each model is trained with the project's default recipe (``TrainConfig``'s defaults) in its own run
folder ``OUT/<model>/``, and ``OUT/leaderboard.json`` / ``OUT/leaderboard.md`` are rewritten after
every entry: test top-1 and top-5, parameters, MACs per image at the training input size, training
throughput, and the figure the dataset's own benchmark table publishes for the family.

A league is resumable: an entry whose run finished (``summary.json``) with the same settings is
skipped, an interrupted one (``config.json`` + ``train_state.pt``) is continued where it stopped,
and an entry trained with other settings is an error that names it; nothing is ever deleted.

``--budget-minutes M`` gives each model the same wall-clock budget instead of the same epochs: the
model's training and evaluation speed is measured on a few real batches, and the number of epochs
(or, when one epoch of the full set does not fit, a seeded training subset) is chosen to fit M
minutes. The choice is stored in the run folder (``league_plan.json``) and in the leaderboard, so a
rerun reuses it rather than re-measuring, and ``--epochs`` / ``--train-subset`` reproduce it.
"""
from __future__ import annotations

import fnmatch
import itertools
import json
import math
import sys
import time
import typing
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from cnnzoo.analysis import count_macs
from cnnzoo.data.datasets import ImageDataset, iterate_batches, load_dataset, resize_to
from cnnzoo.inference.evaluate import tta_views
from cnnzoo.models.factory import create_model
from cnnzoo.models.registry import get_model_cfg, list_models, model_kwargs_for, unknown_name_error
from cnnzoo.training.config import TrainConfig, experiment_settings, train_command
from cnnzoo.training.loggers import LogGroup
from cnnzoo.training.loop import (
    RunData,
    build_model,
    build_optimizer,
    epoch_batches,
    fit_input_size,
    memory_format,
    resume_training,
    run_device,
    train,
    training_loss,
)
from cnnzoo.training.recipes import load_tier, tier_names
from cnnzoo.training.step import train_step
from cnnzoo.utils.distributed import World
from cnnzoo.utils.io import write_json, write_text
from cnnzoo.utils.precision import Amp, resolve_precision

# One small-input variant per family of the zoo, plus LeNet-5 and both MobileNets.
DEFAULT_MODELS = ["lenet5", "alexnet_cifar", "zfnet_cifar", "vgg16_cifar", "googlenet_cifar", "inception_v3_cifar",
                  "resnet18_cifar", "seresnet18_cifar", "mobilenet_v1_cifar", "mobilenet_v2_cifar"]

# A tier: a fixed league, one member per family, each trained with one recipe for one time budget;
# a member may set its constructor's arguments (model_kwargs), bf16 autocast (amp) and other
# TrainConfig fields (settings) apart. The files cnnzoo/training/recipes/league/NAME.toml, with their reasons.
TIERS: dict[str, dict[str, Any]] = {name: load_tier(name, typing.get_type_hints(TrainConfig)) for name in tier_names()}
LEAGUE_JSON = "league.json"  # the entries behind the README's chart: copy to docs/league.json

# Fashion-MNIST test accuracy from the dataset's own benchmark table (zalandoresearch/fashion-mnist
# README), for the architectures that table names. Matched by model name, not by family: the table's
# "ResNet18" says nothing about ResNet-20 or SE-ResNet-18, nor its "VGG16" about VGG-11. The table's
# "MobileNet" does not say which version, so both v1 and v2 are set beside it.
PUBLISHED_FASHION_MNIST: list[tuple[str, str, float]] = [
    ("alexnet*", "AlexNet", 0.899),
    ("vgg16*", "VGG16", 0.935),
    ("googlenet*", "GoogLeNet", 0.937),
    ("resnet18*", "ResNet18", 0.949),
    ("mobilenet*", "MobileNet", 0.950),
]

# What config.json holds as the run resolved it (the input size it trained at, its classes by name)
# rather than as asked. A run whose config predates its "experiment" record is compared on these
# only where the request names one.
RESOLVED_IN_CONFIG = ("input_size", "classes")

PLAN_FILE = "league_plan.json"
# A few timed steps are a short sample of a long run (a CPU's clock and its neighbours vary): the
# plan fills this share of the budget, so that a slower stretch of training still fits.
PLAN_SHARE = 0.9


def published_figure(model: str, dataset: str = "fashion-mnist") -> tuple[str | None, float | None]:
    """(name in the benchmark table, test top-1) published for ``model``'s architecture, or (None, None)."""
    if dataset != "fashion-mnist":
        return None, None
    for pattern, label, top1 in PUBLISHED_FASHION_MNIST:
        if fnmatch.fnmatchcase(model, pattern):
            return label, top1
    return None, None


def resolve_models(patterns: list[str] | None) -> list[str]:
    """Registered names for ``patterns`` (exact names or fnmatch wildcards), in the order given,
    each once. A pattern that matches nothing is a ValueError with the closest names."""
    if not patterns:
        return list(DEFAULT_MODELS)
    names: list[str] = []
    for pattern in patterns:
        matched = list_models(pattern)
        if not matched:
            raise unknown_name_error("model", pattern, list_models())
        names.extend(n for n in matched if n not in names)
    return names


# --------------------------------------------------------------------------------------------------
# Time budget


def plan_budget(budget_seconds: float, train_images_per_second: float, eval_images_per_second: float,
                train_images: int, test_images: int, batch_size: int = 128, eval_every: int = 1) -> dict[str, Any]:
    """Epochs and training images that fit ``budget_seconds``, from measured speeds.

    An epoch costs ``train_images / train_speed`` seconds of training, and each evaluation of the
    test set (after every ``eval_every``-th epoch and after the last, as the trainer does) its own.
    As many whole epochs of the full training set as fit, at least one; when even one does not fit,
    one epoch of a seeded subset of the training set sized to the time left after the evaluation,
    in whole batches (at least one).
    """
    if budget_seconds <= 0 or train_images_per_second <= 0 or eval_images_per_second <= 0:
        raise ValueError(f"budget and speeds must be positive, got budget {budget_seconds} s, "
                         f"{train_images_per_second} / {eval_images_per_second} img/s")
    eval_seconds = test_images / eval_images_per_second

    def seconds(epochs: int) -> float:
        evaluations = -(-epochs // eval_every) if eval_every else 1
        return epochs * train_images / train_images_per_second + evaluations * eval_seconds

    if seconds(1) <= budget_seconds:
        epochs = 1
        while seconds(epochs + 1) <= budget_seconds:
            epochs += 1
        return dict(epochs=epochs, train_images=train_images, train_subset=None,
                    estimated_seconds=round(seconds(epochs), 1))
    fit = math.floor((budget_seconds - eval_seconds) * train_images_per_second / batch_size) * batch_size
    n = min(train_images, max(batch_size, fit))
    return dict(epochs=1, train_images=n, train_subset=n if n < train_images else None,
                estimated_seconds=round(n / train_images_per_second + eval_seconds, 1))


def measure_speed(cfg: TrainConfig, train_ds: ImageDataset, *, steps: int = 24, warmup: int = 4) -> dict[str, float]:
    """Training and evaluation images per second of ``cfg.model``, timed on real batches.

    The run's own set-up (``train.build_model`` on ``train.RunData``: the model with its
    data-dependent layers, frozen parts, memory format and normalisation; ``build_optimizer``;
    the precision it will train in) and the work of its steps (the epoch's batches with their
    augmentation, normalise, forward, loss with auxiliary heads, backward, optimiser step) at the
    same batch size, input size, threads and device; ``warmup`` steps first, so that one-off costs
    (kernel selection, the memory allocator settling on its buffers) are not counted. Evaluation is
    timed on the same images in inference mode, on every view the recipe's test-time augmentation
    averages over.
    """
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = World()
    device = run_device(cfg, world)
    data_size = tuple(train_ds.images.shape[1:])
    input_size = fit_input_size(cfg.model, data_size, cfg.input_size)
    n = min(len(train_ds), (warmup + steps) * cfg.batch_size)
    ds = ImageDataset(resize_to(train_ds.images[:n], input_size[1:]), train_ds.labels[:n], train_ds.classes)
    data = RunData(ds, ds, *ds.channel_stats(), input_size, data_size, skipped=[])
    torch.manual_seed(cfg.seed)
    net, _, _ = build_model(cfg, data, world, device)
    net.train()
    opt = build_optimizer(net, cfg)
    amp = resolve_precision(cfg.amp, device).amp  # as the run will train
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    layout = memory_format(cfg)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        x = data.normalize(x.to(device)).contiguous(memory_format=layout)
        y = y.to(device)
        train_step(net, x, y, lambda out, y: training_loss(out, y, cfg.label_smoothing, len(y)), opt, amp=amp)

    def timed(run: Callable[[torch.Tensor, torch.Tensor], Any], batches: Iterable) -> float:
        sync()
        t0, images = time.perf_counter(), 0
        for x, y, *_ in batches:  # drawn inside the clock: augmentation is part of a training step
            run(x, y)
            images += len(y)
        sync()
        return images / (time.perf_counter() - t0)

    batches = epoch_batches(ds, cfg, 0, 0, world)
    for x, y, _ in itertools.islice(batches, min(warmup, math.ceil(n / cfg.batch_size) - 1)):
        step(x, y)
    train_speed = timed(step, batches)
    net.eval()

    @torch.inference_mode()
    def infer(x: torch.Tensor, y: torch.Tensor) -> None:
        with autocast:
            for view in tta_views(x.to(device), cfg.tta_flip, cfg.tta_shift):
                net(data.normalize(view).contiguous(memory_format=layout))

    plain = list(iterate_batches(ds, cfg.batch_size))
    infer(*plain[0])
    eval_speed = timed(infer, plain)
    return dict(train_images_per_second=round(train_speed, 1), eval_images_per_second=round(eval_speed, 1))


# --------------------------------------------------------------------------------------------------
# Entries: skip, resume or train


def settings_difference(requested: TrainConfig, saved: dict[str, Any]) -> list[str]:
    """``key saved -> requested`` for each setting of the experiment (``train.experiment_settings``)
    in which the run whose config.json is ``saved`` differs from ``requested``. A setting that the
    run's record predates counts as its default (what that run did)."""
    want = experiment_settings(requested)
    recorded = saved.get("experiment")
    if recorded is None:  # recorded before the request itself was: config.json's fields
        recorded = experiment_settings(TrainConfig.from_dict(
            {k: v for k, v in saved.items() if not (k in RESOLVED_IN_CONFIG and want.get(k) is None)}))
        recorded = {k: v for k, v in recorded.items() if k in saved}
    have = {**experiment_settings(type(requested)()), **recorded}
    return [f"{k} {have[k]!r} -> {want[k]!r}" for k in want if have[k] != want[k]]


def entry_state(cfg: TrainConfig) -> str:
    """What is in ``cfg.out`` for this entry: "new", "finished" (summary.json), "interrupted"
    (config.json + train_state.pt) or "unstarted" (config.json only: killed before the first
    checkpoint, nothing trained). A run there with other settings is a ValueError naming them."""
    run_dir = Path(cfg.out)
    config = run_dir / "config.json"
    if not config.is_file():
        return "new"
    saved = json.loads(config.read_text())
    diff = settings_difference(cfg, saved)
    if diff:
        raise ValueError(f"entry {cfg.model}: {run_dir} holds a run with other settings ({'; '.join(diff)}); "
                         f"rerun with that run's settings, or pass another --out (nothing was deleted)")
    if (run_dir / "summary.json").is_file():
        return "finished"
    if (run_dir / "train_state.pt").is_file():
        return "interrupted"
    return "unstarted"


def run_entry(cfg: TrainConfig, *, progress: bool = True,
              log_group: LogGroup | None = None) -> tuple[dict[str, Any], str]:
    """Train, continue or skip the run of ``cfg`` in ``cfg.out``; returns (summary, what was done:
    "skipped", "resumed" or "trained"). ``log_group``: the league or experiment its --log belongs to
    (a continued run keeps the MLflow run it started in)."""
    state = entry_state(cfg)
    run_dir = Path(cfg.out)
    if state == "finished":
        return json.loads((run_dir / "summary.json").read_text()), "skipped"
    if state == "interrupted":
        return resume_training(run_dir, progress=progress), "resumed"
    if state == "unstarted":
        # A run killed between writing its config and its first checkpoint holds no weights; its
        # two files are rewritten by the fresh start (same settings, checked above).
        print(f"entry {cfg.model}: {run_dir} was stopped before its first checkpoint; starting it again",
              file=sys.stderr)
        for name in ("config.json", "metrics.csv"):
            (run_dir / name).unlink(missing_ok=True)
    return train(cfg, progress=progress, log_group=log_group), "trained"


def league_config(model: str, *, epochs: int | None, train_subset: int | None, out: Path, dataset: str,
                  data_dir: str | None, device: str, amp: Amp | None, threads: int | None, seed: int,
                  recipe: str | None = None, model_kwargs: dict[str, Any] | None = None,
                  settings: dict[str, Any] | None = None, logging: dict[str, Any] | None = None) -> TrainConfig:
    """The default recipe (or the named one) for ``model``; only what the league varies is set, and
    a tier member's own ``settings`` (TrainConfig fields) on top, but for the arguments given here
    (``logging``: the fields log and log_every, where given)."""
    given = dict(model=model, dataset=dataset, data_dir=data_dir, train_subset=train_subset, seed=seed,
                 threads=threads, device=device, out=str(out / model), **({} if amp is None else {"amp": amp}),
                 **({"model_kwargs": dict(model_kwargs)} if model_kwargs else {}), **(logging or {}))
    given = {**(settings or {}), **given}
    cfg = TrainConfig.from_recipe(recipe, **given) if recipe else TrainConfig(**given)
    if epochs is not None:
        cfg.epochs = epochs
    # The default warm-up is one epoch; a short budgeted run (often one epoch of a subset) would
    # then spend all of it ramping the learning rate up and never decay it.
    cfg.warmup_epochs = min(cfg.warmup_epochs, cfg.epochs / 5)
    return cfg


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _no_measuring(model: str) -> Any:
    raise AssertionError("an entry with a run on disk is never measured")


def _plan_entry(cfg: TrainConfig, budget_minutes: float, data: Callable[[str], tuple[ImageDataset, int]],
                progress: bool) -> tuple[TrainConfig, dict[str, Any]]:
    """Epochs / subset for ``cfg.model`` under the budget: the plan stored with its run if there is
    one for this budget, else a fresh measurement (stored before training starts)."""
    run_dir = Path(cfg.out)
    plan = _read_json(run_dir / PLAN_FILE)
    has_run = (run_dir / "config.json").is_file()
    # What a plan depends on; threads and device are not in it, so a league can be continued elsewhere.
    basis = dict(budget_minutes=budget_minutes, dataset=cfg.dataset, seed=cfg.seed, batch_size=cfg.batch_size,
                 base_train_subset=cfg.train_subset)
    same = plan is not None and all(plan.get(k) == v for k, v in basis.items())
    if has_run and plan is None:
        saved = json.loads((run_dir / "config.json").read_text())
        raise ValueError(f"entry {cfg.model}: {run_dir} holds a run of epochs={saved.get('epochs')}, "
                         f"train_subset={saved.get('train_subset')} not made under --budget-minutes; rerun it "
                         f"with --epochs {saved.get('epochs')}, or pass another --out (nothing was deleted)")
    if has_run and not same:
        diff = [f"{k} {plan.get(k)!r} -> {v!r}" for k, v in basis.items() if plan.get(k) != v]
        raise ValueError(f"entry {cfg.model}: {run_dir} holds a run planned with other settings ({'; '.join(diff)}); "
                         f"rerun with that run's settings, or pass another --out (nothing was deleted)")
    if not same:
        ds, test_images = data(cfg.model)
        if cfg.train_subset:
            ds = ds.subset(cfg.train_subset, cfg.seed)
        speed = measure_speed(cfg, ds)
        plan = dict(**basis, **speed,
                    **plan_budget(budget_minutes * 60 * PLAN_SHARE, speed["train_images_per_second"],
                                  speed["eval_images_per_second"], len(ds), test_images,
                                  eval_every=cfg.eval_every))
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / PLAN_FILE, plan)
        if progress:
            subset = f" on a subset of {plan['train_images']} images" if plan["train_subset"] else ""
            print(f"{cfg.model}: {speed['train_images_per_second']:.0f} img/s training, "
                  f"{speed['eval_images_per_second']:.0f} img/s evaluation -> {plan['epochs']} epoch(s){subset} "
                  f"(about {plan['estimated_seconds']:.0f} s)", flush=True)
    # No subset in the plan: all of the training set the league was given (itself maybe a subset).
    subset = plan["train_subset"] if plan["train_subset"] is not None else cfg.train_subset
    return replace(cfg, epochs=plan["epochs"], train_subset=subset), plan


# --------------------------------------------------------------------------------------------------
# Leaderboard


def leaderboard_entry(summary: dict[str, Any], cfg: TrainConfig, plan: dict[str, Any] | None) -> dict[str, Any]:
    """One row: the run's results, its cost (params, MACs per image at the training input size,
    training throughput) and the published figure for its architecture."""
    input_size = tuple(summary["input_size"])
    classes = json.loads((Path(summary["run_dir"]) / "config.json").read_text())["classes"]
    with torch.device("meta"):  # shapes and counts only, as registry.model_table does
        model = create_model(cfg.model, num_classes=len(classes), in_chans=input_size[0], **cfg.model_kwargs)
    label, top1 = published_figure(cfg.model, cfg.dataset)
    seconds = summary["train_seconds"]
    device = f"{summary.get('device_name', summary['device'])}, {summary['threads']} threads" \
        if summary["device"] == "cpu" else summary.get("device_name", summary["device"])
    return dict(model=cfg.model, family=get_model_cfg(cfg.model)["family"], dataset=cfg.dataset, params=summary["params"],
                macs=count_macs(model, input_size), input_size=list(input_size), epochs=summary["epochs"],
                train_images=summary["train_images"], train_seconds=seconds, test_top1=summary["test_top1"],
                test_top5=summary["test_top5"],
                images_per_second=round(summary["epochs"] * summary["train_images"] / seconds, 1) if seconds else None,
                measured_images_per_second=plan["train_images_per_second"] if plan else None,
                run_dir=summary["run_dir"], published=top1, published_model=label, device=device,
                precision=summary.get("precision"), date=summary.get("finished"), command=train_command(cfg))


def format_leaderboard(board: dict[str, Any]) -> str:
    """The leaderboard as markdown, best test top-1 first."""
    s = board["settings"]
    how = (f"a budget of {s['budget_minutes']:g} min per model (epochs / training images chosen from the measured "
           f"speed)" if s["budget_minutes"] else f"{s['epochs']} epochs per model")
    named = s.get("recipe_name")
    lines = [f"# cnnzoo league on {s['dataset']}", "",
             (f"Recipe `{named}` (" if named else "Default recipe (`TrainConfig` defaults: ") +
             f"{s['recipe']['opt']} lr {s['recipe']['lr']:g}, weight decay "
             f"{s['recipe']['weight_decay']:g}, {s['recipe']['sched']} schedule, batch {s['recipe']['batch_size']}), "
             f"{how}; seed {s['seed']}, {s['device']}{', bf16 autocast' if s['amp'] else ''}, "
             f"{s['threads'] or 'all'} threads. Published: the dataset's benchmark table (test top-1).", "",
             "| # | model | family | test top-1 | published | top-5 | params | MMACs | input | epochs | train images "
             "| train s | img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, e in enumerate(board["entries"], 1):
        published = "-" if e["published"] is None else f"{e['published']:.3f} ({e['published_model']})"
        lines.append(f"| {i} | {e['model']} | {e['family']} | {e['test_top1']:.4f} | {published} | {e['test_top5']:.4f} "
                     f"| {e['params']:,} | {e['macs'] / 1e6:.1f} | {'x'.join(map(str, e['input_size']))} | {e['epochs']} "
                     f"| {e['train_images']:,} | {e['train_seconds']:.1f} | "
                     f"{'-' if e['images_per_second'] is None else format(e['images_per_second'], '.0f')} |")
    pending = board.get("pending") or []
    if pending:
        lines += ["", f"Not yet trained: {', '.join(pending)}."]
    return "\n".join(lines) + "\n"


def run_league(models: list[str] | None = None, *, epochs: int | None = None, budget_minutes: float | None = None,
               out: str | Path = "runs/league", dataset: str = "fashion-mnist", data_dir: str | None = None,
               device: str | None = None, amp: Amp | None = None, threads: int | None = None, seed: int = 0,
               train_subset: int | None = None, recipe: str | None = None, model_kwargs: dict[str, Any] | None = None,
               tier: str | None = None, progress: bool = True, log: list[str] | None = None,
               log_every: int | None = None) -> dict[str, Any]:
    """Train (or skip, or continue) every model of the league and return the leaderboard, which is
    also written to ``out/leaderboard.json``, ``out/leaderboard.md`` and ``out/league.json`` (the
    entries with the command that reproduces each) after each entry. ``model_kwargs`` go to each
    model that takes them. A ``tier`` (``TIERS``) gives the models, their constructor arguments,
    autocast and settings, the recipe, the budget and the threads; arguments given here win over it.
    ``log``, ``log_every``: each entry's --log (TensorBoard: ``--logdir out`` overlays them; MLflow:
    one experiment for the league)."""
    members: dict[str, dict[str, Any]] = {}
    own_epochs: set[str] = set()  # members that train their own epochs rather than the tier's budget
    if tier is not None:
        if tier not in TIERS:
            raise ValueError(f"unknown tier {tier!r}; known: {', '.join(TIERS)}")
        t = TIERS[tier]
        models, members = models or list(t["members"]), t["members"]
        recipe, threads, device = recipe or t["recipe"], threads or t["threads"], device or t["device"]
        if epochs is None and budget_minutes is None:
            budget_minutes = t["budget_minutes"]
            own_epochs = {m for m, member in members.items() if "epochs" in member.get("settings", {})}
    device = device or "cpu"
    _check_length(epochs, budget_minutes)
    names = resolve_models(models)
    per_model = model_kwargs_for(names, model_kwargs or {})
    per_model = {m: {**members.get(m, {}).get("model_kwargs", {}), **kw} for m, kw in per_model.items()}
    out = Path(out)
    logging = {k: v for k, v in dict(log=log, log_every=log_every).items() if v is not None}
    configs = [league_config(m, epochs=epochs, train_subset=train_subset, out=out, dataset=dataset, data_dir=data_dir,
                             device=device, amp=members.get(m, {}).get("amp") if amp is None else amp, threads=threads,
                             seed=seed, recipe=recipe, model_kwargs=per_model[m],
                             settings=members.get(m, {}).get("settings"), logging=logging) for m in names]
    planned = set(names) - own_epochs if budget_minutes is not None else set()
    # Check every entry's settings, and every entry already on disk, before any training time is spent.
    for cfg in configs:
        cfg.validate()
        if cfg.model in planned and (Path(cfg.out) / "config.json").is_file():
            cfg, _ = _plan_entry(cfg, budget_minutes, _no_measuring, progress=False)
        entry_state(cfg)
    out.mkdir(parents=True, exist_ok=True)
    first = configs[0]
    precision = resolve_precision(first.amp, device)  # the first entry's, as the board's title reports it
    board: dict[str, Any] = dict(
        settings=dict(dataset=dataset, data_dir=data_dir, budget_minutes=budget_minutes,
                      epochs=epochs if epochs is not None or budget_minutes is not None else first.epochs,
                      train_subset=train_subset, seed=seed, device=device, amp=precision.amp,
                      precision=precision.record(), threads=threads, models=names,
                      recipe_name=recipe, recipe={k: getattr(first, k) for k in RECIPE_COLUMNS}),
        entries=[], pending=list(names))
    data = _BudgetData(dataset, data_dir, seed)
    for cfg in configs:
        plan = None
        if cfg.model in planned:
            cfg, plan = _plan_entry(cfg, budget_minutes, data, progress)
        _run_entry_into(board, cfg, plan, out, progress, LogGroup(out, f"league {out}"))
    del board["pending"]
    _write_board(board, out)
    return board


# The settings of a recipe that the leaderboard records beside its entries.
RECIPE_COLUMNS = ("opt", "lr", "momentum", "weight_decay", "sched", "warmup_epochs", "batch_size", "label_smoothing",
                  "crop_padding", "flip", "tta_flip", "tta_shift")


def _check_length(epochs: int | None, budget_minutes: float | None) -> None:
    if epochs is not None and budget_minutes is not None:
        raise ValueError("give --epochs or --budget-minutes, not both")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    if budget_minutes is not None and budget_minutes <= 0:
        raise ValueError(f"--budget-minutes must be > 0, got {budget_minutes}")


class _BudgetData:
    """``(model) -> (training set, test set's size)``, loaded (once per size) only if a budget needs
    measuring; at the size the trainer loads them (digits as stored, else the model's)."""

    def __init__(self, dataset: str, data_dir: str | None, seed: int) -> None:
        self.dataset, self.data_dir, self.seed = dataset, data_dir, seed
        self.cache: dict[Any, tuple[ImageDataset, int]] = {}

    def __call__(self, model: str) -> tuple[ImageDataset, int]:
        size = None if self.dataset in ("fashion-mnist", "mnist") else get_model_cfg(model)["input_size"]
        if size not in self.cache:
            common = dict(data_dir=self.data_dir, input_size=size, seed=self.seed)
            train_ds = load_dataset(self.dataset, "train", **common)
            self.cache[size] = (train_ds, len(load_dataset(self.dataset, "test", classes=train_ds.classes, **common)))
        return self.cache[size]


def _run_entry_into(board: dict[str, Any], cfg: TrainConfig, plan: dict[str, Any] | None, out: Path,
                    progress: bool, log_group: LogGroup) -> None:
    """Train one entry, add it to the board and write the board."""
    if progress:
        print(f"== {cfg.model}: {cfg.epochs} epoch(s)"
              f"{f' on {cfg.train_subset} training images' if cfg.train_subset else ''} -> {cfg.out}", flush=True)
    summary, done = run_entry(cfg, progress=progress, log_group=log_group)
    entry = leaderboard_entry(summary, cfg, plan)
    entry["status"] = done
    board["entries"].append(entry)
    board["entries"].sort(key=lambda e: -e["test_top1"])
    board["pending"].remove(cfg.model)
    _write_board(board, out)
    if progress:
        print(f"{cfg.model}: test top-1 {summary['test_top1']:.4f} ({done})", flush=True)


def _write_board(board: dict[str, Any], out: Path) -> None:
    write_json(out / "leaderboard.json", board)
    write_text(out / "leaderboard.md", format_leaderboard(board))
    keys = ("model", "family", "dataset", "test_top1", "train_seconds", "params", "macs", "device", "precision", "date",
            "command")
    write_json(out / LEAGUE_JSON, [{k: e[k] for k in keys} for e in board["entries"]])
