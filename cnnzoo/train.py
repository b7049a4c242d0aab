"""The training loop in named parts: build the run -> one epoch of steps -> evaluate -> checkpoint -> finish.

A batch becomes a loss in ``train_epoch`` (``training_loss``, through ``engine.train_step``).
The trainer knows nothing of model families: it asks the registry for a model by name and its
default configuration (input size, normalisation), and everything else is in ``TrainConfig``.

The same loop runs as one process or as N under ``torchrun`` (DistributedDataParallel): global
step t always trains on the same ``batch_size`` images, split between the ranks, so N processes
reach the weights one process would (to float rounding). A run can be killed at any instant and
continued with ``--resume``: the state a resume needs is one atomically written file, written at
every epoch end, every ``checkpoint_every`` steps, and on SIGINT / SIGTERM.
"""
from __future__ import annotations

import ast
import csv
import io
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
import typing
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo import distributed as dist_util
from cnnzoo import stream
from cnnzoo.checkpoint import (
    load_train_state,
    model_meta,
    remove_stale_temp_files,
    save_train_state,
    save_weights,
    write_json,
    write_text,
)
from cnnzoo.data import ImageDataset, Normalize, iterate_batches, load_dataset, resize_to, stratified_split
from cnnzoo.distributed import World
from cnnzoo.engine import StepHooks, main_logits, train_step
from cnnzoo.evaluate import evaluate
from cnnzoo.finetune import (
    InitialCheckpoint,
    backbone_eval,
    classifier_parameters,
    freeze_backbone,
    published_normalization,
    read_initial_checkpoint,
)
from cnnzoo.hub import weights_origin
from cnnzoo.optim import MUON_MOMENTUM, Muon
from cnnzoo.precision import Precision, resolve_precision
from cnnzoo.recipes import RECIPE_DIR, load_recipe, read_toml, recipe_names, recipe_path
from cnnzoo.registry import create_model, get_model_cfg
from cnnzoo.seeds import epoch_seed, step_seed
from cnnzoo.stream import AUTO_AUGMENTS, LOADERS, StreamSource


def _opt(default: Any, help: str, **flag: Any) -> Any:
    """A TrainConfig field with its help text (the `cnnzoo train` flag's), units included, and
    any other ``add_argument`` setting of its flag (metavar, choices)."""
    return field(default=default, metadata={"help": help, **flag})


# The default recipe's values (cnnzoo/recipes/default.toml, each with its unit and reason) are the
# defaults of the fields it names; the file is checked against the fields with the other recipes.
_DEFAULT = read_toml(RECIPE_DIR / "default.toml")

# What build_optimizer and build_scheduler know.
OPTIMIZERS = ("adamw", "sgd", "muon")
SCHEDULES = ("cosine", "linear", "step", "none")


@dataclass
class TrainConfig:
    # what to train on
    model: str = _opt(_DEFAULT["model"], "registered model name (`cnnzoo models` lists them)")
    dataset: str = _opt(_DEFAULT["dataset"], "fashion-mnist | mnist | imagefolder | synthetic | webdataset "
                                         "(--data-dir 'DIR/train-{000000..000009}.tar', written by `cnnzoo shards`)")
    data_dir: str | None = _opt(None, "folder of the dataset's files; None: the dataset's default location")
    input_size: tuple[int, int, int] | None = _opt(
        None, "training input (C, H, W) in pixels; None: the dataset's, fitted to the model", metavar=("C", "H", "W"))
    train_subset: int | None = _opt(None, "train on a seeded random subset of this many images; None: the whole split")
    test_subset: int | None = _opt(None, "evaluate on a seeded subset of this many images after each epoch; "
                                         "None: the whole test split")
    classes: list[str] | None = _opt(
        None, "train and test on these classes only, by index or name (e.g. 5,6,7 or Sandal Bag), relabelled "
              "0..k-1 in the order given; None: all", metavar="CLASS")
    train_per_class: int | None = _opt(None, "train on a seeded random subset of this many images of each class; "
                                             "None: all")
    synthetic_classes: int = _opt(10, "number of classes of --dataset synthetic")
    skip_bad_images: bool = _opt(False, "imagefolder: skip undecodable files (reported) instead of failing")
    val_split: float | None = _opt(None, "evaluate on this fraction of the training split, held out per class "
                                         "(seeded), instead of the test/val split; e.g. 0.1 for a folder without val/")
    # image files: decoded once into memory, or per batch by worker processes
    data_loader: str = _opt("auto", "memory: decode the whole dataset once | stream: decode each batch in --workers "
                                    "processes (RandomResizedCrop + flip) | auto: stream when the decoded images "
                                    "would pass --memory-budget-gb", choices=LOADERS)
    memory_budget_gb: float | None = _opt(None, "--data-loader auto: most GiB the decoded images may take in memory; "
                                                "None: a quarter of RAM")
    workers: int = _opt(2, "stream: decoding processes (0: in the training process)")
    auto_augment: str | None = _opt(None, "stream: randaugment | trivialaugment (torchvision.transforms.v2)",
                                    choices=AUTO_AUGMENTS)
    color_jitter: float = _opt(0.0, "stream: brightness, contrast and saturation jitter (fraction); 0: off")
    # starting point (a new run from trained weights: fresh optimiser and schedule, epoch 0)
    initial_checkpoint: str | None = _opt(
        None, "start a new run from the weights of a cnnzoo run folder or weights file (--model defaults to its "
              "network); the classifier starts fresh when the classes differ, the first conv is fitted to the "
              "input channels",
        metavar="RUN_DIR|FILE")
    freeze_backbone: bool = _opt(False, "train the classifier only (a linear probe): every other layer keeps its "
                                        "weights and its batch-norm statistics")
    backbone_lr_scale: float = _opt(1.0, "learning rate of every layer but the classifier, as a multiple of --lr")
    # optimisation (defaults: the LeNet-5 main job, >= 0.905 Fashion-MNIST top-1 in < 60 s on 2 cores)
    epochs: int = _opt(_DEFAULT["epochs"], "passes over the training set (epochs)")
    batch_size: int = _opt(_DEFAULT["batch_size"], "images per optimisation step (global, over all ranks)")
    lr: float = _opt(_DEFAULT["lr"], "peak learning rate, reached after the warm-up")
    opt: str = _opt(_DEFAULT["opt"], "optimiser: adamw | sgd (Nesterov) | muon (Muon on convolution filters, Nesterov SGD "
                             "at --lr on the rest)", choices=OPTIMIZERS)
    momentum: float = _opt(_DEFAULT["momentum"], "SGD momentum (sgd, and muon's SGD part)")
    muon_lr: float = _opt(0.08, "muon: peak learning rate of the convolution filters; each step moves a filter "
                                "bank by about this fraction of its norm")
    weight_decay: float = _opt(_DEFAULT["weight_decay"], "weight decay (AdamW: decoupled, SGD: L2) on weights only, "
                                     "not on biases or norm layers")
    sched: str = _opt(_DEFAULT["sched"], "learning-rate schedule, stepped every batch: cosine | linear (to 0) | "
                                "step (x0.1 at half and three quarters of training) | none", choices=SCHEDULES)
    warmup_epochs: float = _opt(_DEFAULT["warmup_epochs"], "linear learning-rate warm-up from 0 (epochs, may be fractional)")
    label_smoothing: float = _opt(0.0, "cross-entropy label smoothing (fraction of the target spread over all classes)")
    lookahead: float = _opt(0.0, "every 5 steps, move a slow copy of the weights toward them and train on from it "
                                 "(Zhang et al. 2019), with a decay ramping as (step / last step)^3 up to this "
                                 "value (airbench: 0.77); the run ends on the slow copy; 0: off", metavar="DECAY")
    # augmentation, on whole uint8 batches
    crop_padding: int = _opt(0, "random translation of up to this many pixels (pad and crop); 0: off")
    flip: bool = _opt(False, "random horizontal flips")
    alternate_flip: bool = _opt(False, "with --flip: mirror each image in every other epoch, from a random first "
                                       "epoch per image, instead of at random each epoch: every image is seen both "
                                       "ways in any two epochs (Jordan 2024)")
    cutout: int = _opt(0, "black out a square of this side at a random place in each image (pixels); 0: off",
                       metavar="PIXELS")
    cutout_off_epochs: int = _opt(0, "train the last this many epochs without Cutout, on images like the test's "
                                     "(epochs); 0: Cutout throughout", metavar="EPOCHS")
    low_res: int = _opt(0, "progressive resizing (Howard 2018): train the first --low-res-epochs epochs on images "
                           "scaled down to this side (bilinear, antialiased), cheaper per step; 0: off",
                        metavar="PIXELS")
    low_res_epochs: int = _opt(0, "how many epochs, from the first, --low-res applies to", metavar="EPOCHS")
    tta_flip: bool = _opt(False, "evaluate on each image and its mirror image, logits averaged")
    tta_shift: int = _opt(0, "also evaluate on each image moved 1 to this many pixels up, down, left and right "
                             "(zero fill), logits averaged over all views; 0: off", metavar="PIXELS")
    # bookkeeping
    eval_every: int = _opt(1, "evaluate the test set after every this many epochs and after the last (epochs); "
                              "0: after the last only", metavar="EPOCHS")
    eval_batch_size: int | None = _opt(None, "images per evaluation batch; None: 1024 for data held in memory, "
                                             "the training batch size for images decoded per batch")
    seed: int = _opt(0, "seed of weights, data order, subsets and augmentation")
    threads: int | None = _opt(None, "torch intra-op CPU threads; None: all cores")
    device: str = _opt("cpu", "cpu | cuda | cuda:N")
    amp: bool | Literal["auto"] = _opt(
        False, "bfloat16 autocast for forward and loss (no loss scaling needed); auto: where the device computes "
               "bf16 natively (CUDA GPUs with bf16, CPUs with AVX512-BF16 or AMX), fp32 elsewhere")
    channels_last: bool = _opt(True, "NHWC memory format (LeNet-5 trains 1.15-1.25x faster on CPU)")
    # reliability and scale
    checkpoint_every: int = _opt(0, "also checkpoint every this many steps mid-epoch (steps); 0: at epoch ends only",
                                 metavar="STEPS")
    deterministic: bool = _opt(False, "bit-reproducible on the same CPU class (or GPU) and torch build: deterministic kernels, thread count fixed in config.json")
    sync_bn: bool = _opt(False, "multi-process CUDA runs: batch-norm statistics over all ranks")
    out: str | None = _opt(None, "run folder; None: runs/<model>-<dataset>-<time>", metavar="RUN_DIR")
    model_kwargs: dict[str, Any] = field(default_factory=dict,
                                         metadata={"help": "extra keyword arguments of the model's constructor"})
    pretrained: bool = _opt(False, "start from the model's default published weights (`cnnzoo weights` lists them); "
                                   "the classifier is replaced for the dataset's classes")
    weights: str | None = _opt(None, "start from published weights by tag (e.g. tv2_in1k), or a torchvision, timm or "
                                     "cnnzoo weights file; implies --pretrained", metavar="TAG|FILE")
    recipe: str | None = _opt(None, f"start from a named set of settings ({', '.join(recipe_names())}: "
                                    f"cnnzoo/recipes/NAME.toml) or a recipe file; other flags override it",
                              metavar="NAME|FILE")

    @classmethod
    def from_recipe(cls, name: str | None, *, config: str | None = None, **overrides: Any) -> TrainConfig:
        """The settings of the recipe ``name`` (``RECIPES``, or a recipe file), then those of the
        file ``config`` on top, then ``overrides``."""
        return cls(**{**recipe_settings(name, config), **overrides, "recipe": name})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        if cfg.input_size is not None:
            cfg.input_size = tuple(cfg.input_size)
        return cfg

    def validate(self) -> None:
        """Refuse settings that cannot work whatever the data: a value out of range, or options that
        conflict: --initial-checkpoint with --pretrained / --weights (each brings weights),
        --alternate-flip without --flip, --low-res without --low-res-epochs or the reverse (or more
        of them than --epochs), --backbone-lr-scale with --freeze-backbone, --val-split with
        --dataset webdataset. What needs the data or the machine is checked where they are known:
        --low-res against the model's smallest input and the training input (check_low_res);
        --auto-augment, --color-jitter, --alternate-flip and --cutout against the loader chosen
        (_data_loader); a streamed dataset without --data-dir (_stream_run_data); --device cuda and
        --sync-bn against this machine and process group (run_device)."""
        if self.initial_checkpoint and (self.pretrained or self.weights):
            raise ValueError("--initial-checkpoint brings its own weights: leave out --pretrained / --weights")
        counts = {"--tta-shift": self.tta_shift, "--crop-padding": self.crop_padding, "--cutout": self.cutout,
                  "--cutout-off-epochs": self.cutout_off_epochs, "--eval-every": self.eval_every,
                  "--low-res": self.low_res, "--low-res-epochs": self.low_res_epochs}
        if any(v < 0 for v in counts.values()):
            raise ValueError("; ".join(f"{flag} must be >= 0, got {v}" for flag, v in counts.items() if v < 0))
        if not 0 <= self.lookahead < 1:
            raise ValueError(f"--lookahead is a decay in [0, 1), got {self.lookahead}")
        if self.alternate_flip and not self.flip:
            raise ValueError("--alternate-flip chooses which images --flip mirrors: add --flip")
        if bool(self.low_res) != bool(self.low_res_epochs):
            raise ValueError(f"progressive resizing needs both --low-res (got {self.low_res}) and --low-res-epochs "
                             f"(got {self.low_res_epochs})")
        if self.low_res_epochs > self.epochs:
            raise ValueError(f"--low-res-epochs {self.low_res_epochs} is more than the run's --epochs {self.epochs}")
        if self.opt not in OPTIMIZERS:
            raise ValueError(f"--opt must be one of {', '.join(OPTIMIZERS)}, got {self.opt!r}")
        if self.sched not in SCHEDULES:
            raise ValueError(f"--sched must be one of {', '.join(SCHEDULES)}, got {self.sched!r}")
        if self.backbone_lr_scale < 0:
            raise ValueError(f"--backbone-lr-scale must be >= 0, got {self.backbone_lr_scale}")
        if self.freeze_backbone and self.backbone_lr_scale != 1.0:
            raise ValueError("--backbone-lr-scale has no effect with --freeze-backbone (the backbone does not train)")
        if self.dataset == "webdataset" and self.val_split:
            raise ValueError("--val-split picks images at random; shards are read in sequence: write val/ shards "
                             "with `cnnzoo shards` from a folder with val/")


# Named sets of settings (``cnnzoo train --recipe NAME``): the files cnnzoo/recipes/NAME.toml.
RECIPES: dict[str, dict[str, Any]] = {name: load_recipe(name, typing.get_type_hints(TrainConfig))
                                      for name in recipe_names()}


def recipe_settings(recipe: str | None = None, config: str | None = None) -> dict[str, Any]:
    """The TrainConfig values of ``--recipe NAME|FILE`` and ``--config FILE``: the recipe's, then
    the config file's on top (a file of the recipes' format). A config file that names its own
    ``base`` recipe stands for a recipe: given with --recipe too, it is an error."""
    hints = typing.get_type_hints(TrainConfig)
    values = dict(RECIPES[recipe]) if recipe in RECIPES else load_recipe(recipe, hints) if recipe else {}
    if config:
        if recipe and "base" in read_toml(recipe_path(config, Path.cwd())):
            raise ValueError(f"--config {config} names its own base recipe; give it alone, or leave out --recipe "
                             f"{recipe}")
        values.update(load_recipe(config, hints, relative_to=Path.cwd()))
    return values


# The fields that change only a run's speed or its bookkeeping, each with the reason. Two runs that
# differ in these alone are the same experiment: a league, an experiment or a degradation study can
# be continued with other ones, on another machine. Every other field counts, a new one included.
NOT_THE_EXPERIMENT: dict[str, str] = {
    "threads": "CPU threads: speed (and float rounding), whatever the machine has",
    "device": "where the arithmetic runs, not which",
    "workers": "decoding processes of streamed images: speed",
    "out": "the run folder",
    "amp": "bf16 autocast or fp32: speed and rounding; 'auto' resolves on each machine",
    "channels_last": "memory layout of the activations: speed and rounding",
    "eval_batch_size": "images per evaluation batch: speed and memory",
    "eval_every": "which epochs are also scored on the way: the weights and the final score are the same",
    "checkpoint_every": "how often a resume point is written mid-epoch",
    "deterministic": "repeatable kernels and fixed threads: the same arithmetic, its rounding made repeatable",
    "recipe": "a recipe's name: its values are compared in the fields it sets",
}


def experiment_settings(cfg: TrainConfig) -> dict[str, Any]:
    """The settings that make ``cfg`` the experiment it is: every field of its class but
    NOT_THE_EXPERIMENT, as requested (None stays None, not the value a machine resolves it to),
    in JSON's types (tuples as lists), as config.json records them under "experiment"."""
    return {f.name: json.loads(json.dumps(getattr(cfg, f.name))) for f in fields(cfg)
            if f.name not in NOT_THE_EXPERIMENT}


METRIC_COLUMNS = ["epoch", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "lr",
                  "epoch_seconds", "images_per_second"]


class NonFiniteLossError(FloatingPointError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run after a step and a checkpoint; ``str()`` says how to resume.
    A KeyboardInterrupt, so that the CLI exits as it does for Ctrl-C (status 130)."""


# --------------------------------------------------------------------------------------------------
# A config as the command line that reproduces it


def _flag_values(value: Any) -> list[str]:
    """The command-line words of one TrainConfig value (after its flag)."""
    if isinstance(value, (tuple, list)):
        return [str(v) for v in value]
    if isinstance(value, dict):  # --model-kwargs: Python literals, as cli.common.parse_kwargs reads them
        return [",".join(f"{k}={v if _reads_back_as_word(v) else repr(v)}" for k, v in value.items())]
    return [repr(value) if isinstance(value, float) else str(value)]


def _reads_back_as_word(value: Any) -> bool:
    """A string that --model-kwargs reads back as itself without quotes (unit=5x5, act=relu): one
    that is no Python literal, so the parser keeps it as a bare word."""
    if not isinstance(value, str) or value != value.strip() or not value or any(c in value for c in ",='\""):
        return False
    try:
        ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return True
    return False


# Written even at their defaults: what a reader looks for first in a run's command.
_ALWAYS = ("model", "epochs", "seed", "out")


def train_command(cfg: TrainConfig) -> str:
    """``cnnzoo train ...`` with every setting of ``cfg`` that is not TrainConfig's default: run as
    written, it trains the same run (into ``cfg.out``)."""
    words = ["cnnzoo", "train"]
    default = TrainConfig()
    for f in fields(TrainConfig):
        value = getattr(cfg, f.name)
        if f.name == "recipe" or (value == getattr(default, f.name) and f.name not in _ALWAYS):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag[2:])
        elif value is None:
            raise ValueError(f"{f.name}=None differs from its default and has no command-line form")
        else:
            words += [flag, *_flag_values(value)]
    return shlex.join(words)


# --------------------------------------------------------------------------------------------------
# Pieces the loop uses


def fit_input_size(model_name: str, data_size: tuple[int, int, int], requested: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """The input size to train at: the one asked for; else the dataset's own when the model takes
    it; else the model's default (e.g. LeNet-5's 32x32 for 28x28 digits, padded as in the paper)."""
    if requested is not None:
        return tuple(requested)
    cfg = get_model_cfg(model_name)
    c = data_size[0]
    _, min_h, min_w = cfg["min_input_size"]
    if cfg["fixed_input_size"] or data_size[1] < min_h or data_size[2] < min_w:
        return (c, *cfg["input_size"][1:])
    return data_size


def training_loss(outputs: torch.Tensor | tuple[torch.Tensor, ...], y: torch.Tensor, label_smoothing: float,
                  share: float) -> torch.Tensor:
    """The cross-entropy summed over the batch and divided by ``share`` (the batch size, or under
    DDP this rank's share of the global batch). Models built with auxiliary classifiers return
    (logits, *aux) in training mode; each auxiliary loss is weighted 0.3, as in the GoogLeNet paper."""
    logits, aux = (outputs[0], outputs[1:]) if isinstance(outputs, tuple) else (outputs, ())
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing, reduction="sum") / share
    for aux_logits in aux:
        loss = loss + 0.3 * F.cross_entropy(aux_logits.float(), y, label_smoothing=label_smoothing,
                                            reduction="sum") / share
    return loss


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The trainable parameters (frozen ones are left out) in groups: weights with weight decay,
    biases and norm scales without, and under ``--opt muon`` the convolution filters apart; with
    ``backbone_lr_scale`` != 1, each split again into the backbone's (lr x scale) and the
    classifier's (lr). The schedule multiplies every group's lr."""
    cfg.validate()  # called directly too (league's speed sample), not only by build_run
    head = {id(p) for p in classifier_parameters(model)}
    trainable = [p for p in model.parameters() if p.requires_grad]
    parts = [(trainable, 1.0)]
    if cfg.backbone_lr_scale != 1.0:
        parts = [([p for p in trainable if id(p) not in head], cfg.backbone_lr_scale),
                 ([p for p in trainable if id(p) in head], 1.0)]
    # Weight decay regularises weights; on biases and norm scales it only fights the optimiser.
    # Muon moves convolution filters by their norm's fraction, so they need no decay.
    groups = []
    for params, scale in parts:
        filters = {id(p) for p in params if cfg.opt == "muon" and p.ndim == 4}
        if filters:
            groups.append({"params": [p for p in params if id(p) in filters], "muon": True,
                           "lr": cfg.muon_lr * scale, "momentum": MUON_MOMENTUM})
        groups += [{"params": [p for p in params if p.ndim > 1 and id(p) not in filters],
                    "weight_decay": cfg.weight_decay, "lr": cfg.lr * scale},
                   {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": cfg.lr * scale}]
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.opt == "muon":
        return Muon(groups, lr=cfg.lr, momentum=cfg.momentum)
    return torch.optim.AdamW(groups, lr=cfg.lr)  # adamw: validate() admits only OPTIMIZERS


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if cfg.sched == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if cfg.sched == "linear":
            return max(0.0, 1.0 - progress)
        if cfg.sched == "step":  # x0.1 at 50% and 75% of training
            return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def prepare_run_dir(cfg: TrainConfig, resuming: bool, world: World | None = None) -> Path:
    """Create the run folder and prove it is writable before any training time is spent.
    Rank 0 alone touches the disk; the other ranks get its folder, or its error, to raise too."""
    world = world or World()
    out: Path | None = None
    error: OSError | None = None
    if world.is_main:
        out = Path(cfg.out or f"runs/{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            if not resuming and (out / "config.json").exists():
                raise FileExistsError(f"{out} already holds a run; continue it with --resume {out} or choose another --out")
            try:
                out.mkdir(parents=True, exist_ok=True)
                probe = out / ".write-probe"
                probe.write_bytes(b"\0" * 65536)  # a little room for the first checkpoint files
                probe.unlink()
            except OSError as exc:
                raise OSError(f"cannot write to run folder {out}: {exc.strerror or exc}") from exc
            if resuming:
                remove_stale_temp_files(out)  # half-written files of a killed run
        except OSError as exc:
            error = exc
    out, error = dist_util.broadcast_object(world, (out, error))
    if error is not None:
        raise error
    return out


def epoch_batches(ds: ImageDataset, cfg: TrainConfig, epoch: int, first_step: int,
                  world: World) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """This rank's share of each global batch of ``epoch``, from step ``first_step`` on, as
    (uint8 images, labels, images in the global batch).

    The order is a permutation drawn from (seed, epoch) and the augmentation of step t from
    (seed, epoch, t): nothing depends on the steps before, so a resume can start mid-epoch without
    replaying them, and every rank can draw the same global batch and keep its slice of it.
    """
    if isinstance(ds, StreamSource):  # read per batch, in the order and slices described above
        yield from ds.train_batches(cfg.batch_size, cfg.seed, epoch, first_step, world.rank, world.size,
                                    pin_memory=torch.device(cfg.device).type == "cuda")
        return
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch)))
    steps = math.ceil(len(ds) / cfg.batch_size)
    cutout = cfg.cutout if epoch < cfg.epochs - cfg.cutout_off_epochs else 0
    flips = alternate_flips(len(ds), cfg.seed, epoch) if cfg.flip and cfg.alternate_flip else None
    augment = bool(cfg.crop_padding or cfg.flip or cutout)
    for step in range(first_step, steps):
        batch = order[step * cfg.batch_size: (step + 1) * cfg.batch_size]
        n = len(batch)
        lo, hi = n * world.rank // world.size, n * (world.rank + 1) // world.size
        if augment:  # augment the global batch, then slice: the same pixels as one process sees
            g = torch.Generator().manual_seed(step_seed(cfg.seed, epoch, step))
            x, y = next(iterate_batches(ds, n, generator=g, crop_padding=cfg.crop_padding, flip=cfg.flip,
                                        flips=flips, cutout=cutout, indices=batch))
            yield x[lo:hi], y[lo:hi], n
        else:
            x, y = next(iterate_batches(ds, n, indices=batch[lo:hi]))
            yield x, y, n


def check_low_res(cfg: TrainConfig, input_size: tuple[int, int, int]) -> None:
    """--low-res between the model's smallest input and the training input (the rest of its checks
    need no data: TrainConfig.validate)."""
    if not cfg.low_res:
        return
    _, min_h, min_w = get_model_cfg(cfg.model)["min_input_size"]
    if not max(min_h, min_w) <= cfg.low_res <= min(input_size[1:]):
        raise ValueError(f"--low-res {cfg.low_res}: {cfg.model} trains on {input_size[1]}x{input_size[2]} images and "
                         f"takes {min_h}x{min_w} at the least; give a side in between")


def alternate_flips(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Which of ``n`` images to mirror in ``epoch``: a seeded coin per image in even epochs, its
    opposite in odd ones."""
    # one draw for the whole run, seeded from a fixed epoch slot (7) so that each run keeps its flips
    first = torch.rand(n, generator=torch.Generator().manual_seed(epoch_seed(seed, 7))) < 0.5
    return first ^ bool(epoch % 2)


class StopRequest:
    """Turns SIGINT / SIGTERM into a request to stop after the step in flight and a checkpoint.
    A second SIGINT stops at once (KeyboardInterrupt), for a user who will not wait."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _metrics_text(rows: list[list[str]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([METRIC_COLUMNS, *rows])
    return buf.getvalue()


# --------------------------------------------------------------------------------------------------
# The loop: build the run -> epochs (steps, checkpoints) -> evaluate -> finish


@dataclass
class EpochTotals:
    """An epoch's running sums on this rank; in train_state.pt, all ranks' added up."""
    loss_sum: float = 0.0   # per-image loss, summed over the images so far
    correct: int = 0        # top-1 hits
    images: int = 0
    seconds: float = 0.0    # training time of the epoch so far, wall clock

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> EpochTotals:
        if "epoch_totals" in state:
            return cls(**state["epoch_totals"])
        return cls(*state.get("epoch_partial", ()))  # the [loss_sum, correct, images, seconds] of earlier files


@dataclass
class RunData:
    train_ds: ImageDataset | StreamSource
    test_ds: ImageDataset | StreamSource
    mean: tuple[float, ...]           # per channel, in [0, 1] units (the model's config keeps them)
    std: tuple[float, ...]
    input_size: tuple[int, int, int]  # what the model sees (C, H, W)
    data_size: tuple[int, int, int]   # the dataset's own image size
    skipped: list[str]                # undecodable files left out
    normalize: Normalize = field(init=False)

    def __post_init__(self) -> None:
        self.normalize = Normalize(self.mean, self.std)

    def eval_batch_size(self, cfg: TrainConfig) -> int:
        # streamed images are photo-sized: a batch of 1024 at 224x224 alone would take 0.6 GB
        return cfg.eval_batch_size or (cfg.batch_size if isinstance(self.test_ds, StreamSource) else 1024)


def not_evaluated() -> dict[str, float]:
    """The scores of weights not yet evaluated: NaN in metrics.csv, null in last.safetensors."""
    return dict(top1=math.nan, top5=math.nan, loss=math.nan)


@dataclass
class Run:
    """A run between its steps: what was built, and where it stands."""
    cfg: TrainConfig
    world: World
    data: RunData
    device: torch.device
    net: nn.Module                    # the model whose weights are saved
    model: nn.Module                  # what the steps call: ``net``, or ``net`` wrapped by DDP
    meta: dict[str, Any]              # what the weight files carry
    params: int
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    out: Path                         # the run folder
    precision: Precision              # bf16 autocast or fp32, resolved once at the start
    epoch: int = 0                    # where the run starts: epoch, and step within it (a resume)
    step: int = 0
    totals: EpochTotals = field(default_factory=EpochTotals)
    best_top1: float = -1.0
    lookahead: Lookahead | None = None
    train_seconds: float = 0.0
    rows: list[list[str]] = field(default_factory=list)
    test: dict[str, float] = field(default_factory=not_evaluated)

    @property
    def memory_format(self) -> torch.memory_format:
        return memory_format(self.cfg)


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    """The layout of the run's weights and inputs (``--channels-last``)."""
    return torch.channels_last if cfg.channels_last else torch.contiguous_format


def resume_training(run_dir: str | Path, *, epochs: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint (optionally to more epochs); a
    checkpoint taken mid-epoch continues at the step after it, to the same weights as a run
    never stopped."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "train_state.pt").is_file():
        raise FileNotFoundError(f"--resume {run_dir}: no run there (config.json and train_state.pt missing)")
    saved = json.loads((run_dir / "config.json").read_text())
    cfg = TrainConfig.from_dict(saved)
    cfg.out = str(run_dir)
    if epochs is not None:
        cfg.epochs = epochs
    return train(cfg, state=load_train_state(run_dir / "train_state.pt"), progress=progress,
                 precision=saved.get("precision"))


def train(cfg: TrainConfig, *, state: dict[str, Any] | None = None, progress: bool = True,
          precision: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.dataset``; returns the run summary (also in summary.json).
    ``state`` (from train_state.pt) continues a run instead of starting one, and ``precision``
    (config.json's record) keeps the precision it started in rather than resolving ``cfg.amp`` again.

    Under torchrun (WORLD_SIZE > 1 in the environment) this process is one rank of a
    DistributedDataParallel run; only rank 0 writes files and prints.
    """
    world = dist_util.init_from_env(torch.device(cfg.device).type)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    finished = False
    try:
        if cfg.deterministic:
            # Same kernels, same reduction order: cuBLAS needs a fixed workspace for that, and on
            # CPU the thread count splits reductions, so it is fixed and stored in config.json.
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
            if cfg.threads is None:
                cfg = TrainConfig.from_dict({**asdict(cfg), "threads": torch.get_num_threads()})
        with StopRequest() as stop:
            progress = progress and world.is_main
            run = build_run(cfg, state, world, progress, precision)
            for epoch in range(run.epoch, cfg.epochs):
                totals = train_epoch(run, epoch, stop, progress)
                end_epoch(run, epoch, totals, progress)
            summary = finish(run)
        finished = True
        return summary
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        dist_util.close(world, wait_for_peers=finished)


def build_run(cfg: TrainConfig, state: dict[str, Any] | None, world: World, progress: bool,
              recorded_precision: dict[str, Any] | None = None) -> Run:
    """Data, model, optimiser and schedule first, so that a wrong name, a missing dataset or a bad
    option fails before the run folder exists; then the folder, and the state of a resumed run."""
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    initial = read_initial_checkpoint(cfg.initial_checkpoint, cfg.model) if cfg.initial_checkpoint else None
    data = load_run_data(cfg, progress)
    check_low_res(cfg, data.input_size)
    if initial is not None:
        data = initial.fit_normalization(data)
    elif cfg.pretrained or cfg.weights:
        data = published_normalization(data, cfg.model)
    device = run_device(cfg, world)
    # every rank computes in rank 0's precision, printed with its reason before any step
    precision = dist_util.broadcast_object(world, resolve_precision(cfg.amp, device, recorded_precision))
    if progress:
        print(f"precision: {precision.reason}", flush=True)
    net, meta, params = build_model(cfg, data, world, device, initial if state is None else None)
    steps_per_epoch = math.ceil(len(data.train_ds) / cfg.batch_size)
    opt = build_optimizer(net, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    out = prepare_run_dir(cfg, resuming=state is not None, world=world)
    run = Run(cfg, world, data, device, net, net, meta, params, opt, sched, steps_per_epoch, out, precision)
    if cfg.lookahead:
        run.lookahead = Lookahead(net, cfg.lookahead, cfg.epochs * steps_per_epoch)
    if state is not None:
        restore(run, state)
    elif world.is_main:
        write_json(run.out / "config.json", {**asdict(cfg), "out": str(run.out), "input_size": list(data.input_size),
                                             "mean": data.mean, "std": data.std,
                                             "classes": data.train_ds.classes, "params": params,
                                             "pretrained_from": meta.get("pretrained_from"),
                                             "precision": precision.record(), "experiment": experiment_settings(cfg),
                                             **({"initial_weights": initial.record()} if initial else {})})
        write_text(run.out / "metrics.csv", _metrics_text(run.rows))
    if world.distributed:
        if state is None:  # each rank its own dropout masks; DDP copies rank 0's weights to all
            torch.manual_seed(cfg.seed * 1000 + world.rank)
        from torch.nn.parallel import DistributedDataParallel

        run.model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    return run


def load_run_data(cfg: TrainConfig, progress: bool) -> RunData:
    """Train and test splits (subsets as asked), at the input size the model trains at."""
    model_cfg = get_model_cfg(cfg.model)
    load_size = cfg.input_size or (None if cfg.dataset in ("fashion-mnist", "mnist") else model_cfg["input_size"])
    if _data_loader(cfg, load_size) == "stream":
        return _stream_run_data(cfg, tuple(load_size), model_cfg["crop_pct"])
    common = dict(data_dir=cfg.data_dir, input_size=load_size, num_classes=cfg.synthetic_classes, seed=cfg.seed,
                  skip_bad_images=cfg.skip_bad_images)
    train_ds = load_dataset(cfg.dataset, "train", **common)
    if cfg.val_split:
        train_idx, val_idx = stratified_split(train_ds.labels, cfg.val_split, cfg.seed)
        train_ds, test_ds = train_ds.take(train_idx), train_ds.take(val_idx)
    else:
        test_ds = load_dataset(cfg.dataset, "test", classes=train_ds.classes, **common)
    skipped = train_ds.skipped + (test_ds.skipped if not cfg.val_split else [])
    if skipped and progress:
        print(f"skipped {len(skipped)} undecodable images: {', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}")
    train_ds, test_ds = _subsets(cfg, train_ds, test_ds)
    data_size = tuple(train_ds.images.shape[1:])
    input_size = fit_input_size(cfg.model, data_size, cfg.input_size)
    train_ds.images = resize_to(train_ds.images, input_size[1:])
    test_ds.images = resize_to(test_ds.images, input_size[1:])
    return RunData(train_ds, test_ds, *train_ds.channel_stats(), input_size, data_size, skipped)


def _data_loader(cfg: TrainConfig, load_size: tuple[int, int, int] | None) -> str:
    """memory or stream, for this dataset and --data-loader (auto: by the decoded size)."""
    images = 0
    if cfg.dataset == "imagefolder" and cfg.data_loader == "auto" and cfg.data_dir is not None and load_size:
        images = stream.count_images(cfg.data_dir, cfg.val_split)
    loader = stream.choose_loader(cfg.data_loader, cfg.dataset, images, load_size or (0, 0, 0), cfg.memory_budget_gb)
    if loader == "memory" and (cfg.auto_augment or cfg.color_jitter):
        if cfg.data_loader == "auto" and cfg.dataset == "imagefolder":
            return "stream"
        raise ValueError("--auto-augment and --color-jitter act on each image as it is decoded: they need "
                         "--data-loader stream (or auto) with --dataset imagefolder or webdataset")
    if loader == "stream" and cfg.alternate_flip:
        raise ValueError(f"--alternate-flip works on images held in memory; this run decodes them per batch "
                         f"(--data-loader {cfg.data_loader}), each flipped at random: add --data-loader memory")
    if loader == "stream" and cfg.cutout:
        raise ValueError(f"--cutout {cfg.cutout} works on images held in memory; this run decodes them per batch "
                         f"(--data-loader {cfg.data_loader}): pass --cutout 0, or --data-loader memory if they fit")
    return loader


def _stream_run_data(cfg: TrainConfig, load_size: tuple[int, int, int], crop_pct: float) -> RunData:
    """File lists (or shards) decoded per batch, at the input size the model trains at."""
    input_size = fit_input_size(cfg.model, load_size, cfg.input_size)
    tf = stream.SampleTransform(tuple(input_size[1:]), input_size[0], cfg.seed, crop_pct, True, cfg.auto_augment,
                                cfg.color_jitter, cfg.skip_bad_images)
    if cfg.data_dir is None:
        raise ValueError(f"--dataset {cfg.dataset} needs --data-dir (imagefolder: DIR holding train/<class>/*; "
                         f"webdataset: 'DIR/train-{{000000..000009}}.tar')")
    if cfg.dataset == "webdataset":
        from cnnzoo import shards

        train_ds, test_ds = shards.shard_datasets(cfg.data_dir, tf, cfg.workers)
    else:
        train_ds, test_ds = stream.folder_datasets(cfg.data_dir, tf, cfg.workers, cfg.val_split, cfg.seed)
    train_ds, test_ds = _subsets(cfg, train_ds, test_ds)
    return RunData(train_ds, test_ds, *train_ds.channel_stats(seed=cfg.seed), input_size, load_size, train_ds.skipped)


def _subsets(cfg: TrainConfig, train_ds: Any, test_ds: Any) -> tuple[Any, Any]:
    train_ds, test_ds = select_classes(cfg, train_ds, test_ds)
    if cfg.train_per_class:
        train_ds = _in_memory(train_ds, "--train-per-class").per_class_subset(cfg.train_per_class, cfg.seed)
    if cfg.train_subset:
        train_ds = train_ds.subset(cfg.train_subset, cfg.seed)
    if cfg.test_subset:
        test_ds = test_ds.subset(cfg.test_subset, cfg.seed)
    return train_ds, test_ds


def select_classes(cfg: TrainConfig, train_ds: ImageDataset, test_ds: ImageDataset) -> tuple[ImageDataset, ImageDataset]:
    """Both splits cut to ``cfg.classes`` (names or indices, comma-separated or not), relabelled in
    the order given."""
    wanted = [c.strip() for item in cfg.classes or () for c in str(item).split(",") if c.strip()]
    # config.json lists every run's classes by name: on a resume, all of them in order is no selection
    if not wanted or wanted == train_ds.classes:
        return train_ds, test_ds
    return _in_memory(train_ds, "--classes").select_classes(wanted), test_ds.select_classes(wanted)


def _in_memory(ds: Any, flag: str) -> ImageDataset:
    if not isinstance(ds, ImageDataset):
        raise ValueError(f"{flag} works on images held in memory: add --data-loader memory")
    return ds


def run_device(cfg: TrainConfig, world: World) -> torch.device:
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA GPU here")
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)  # one GPU per rank
    if cfg.sync_bn and world.distributed and device.type != "cuda":
        raise ValueError("--sync-bn needs --device cuda: torch's SyncBatchNorm has no CPU kernel")
    return device


def build_model(cfg: TrainConfig, data: RunData, world: World, device: torch.device,
                initial: InitialCheckpoint | None = None) -> tuple[nn.Module, dict[str, Any], int]:
    """(model on ``device`` with the data's normalisation in its config, the metadata its weight
    files carry, its number of parameters); its weights from ``initial`` when given."""
    net = create_model(cfg.model, num_classes=len(data.train_ds.classes), in_chans=data.input_size[0],
                       pretrained=cfg.weights or cfg.pretrained, **cfg.model_kwargs)
    origin = weights_origin(net.pretrained_cfg)
    net.set_pretrained_cfg(mean=data.mean, std=data.std, input_size=data.input_size)
    if initial is not None:
        initial.load_into(net, data.train_ds.classes)
    elif hasattr(net, "init_from_data"):  # layers set from the data (a whitened stem): a fixed sample
        net.init_from_data(data.normalize(data.train_ds.sample_images(5000, cfg.seed)))
    if cfg.freeze_backbone:
        freeze_backbone(net)
    meta = model_meta(net, classes=data.train_ds.classes, dataset=cfg.dataset, data_dir=cfg.data_dir,
                      data_size=list(data.data_size), **({"pretrained_from": origin} if origin else {}))
    params = sum(p.numel() for p in net.parameters())
    if cfg.sync_bn and world.distributed:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # same parameters and state-dict keys
    return net.to(device, memory_format=memory_format(cfg)), meta, params


def restore(run: Run, state: dict[str, Any]) -> None:
    """Weights, optimiser, schedule, this rank's RNG and the epoch's sums from a train_state.pt."""
    run.net.load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    ranks_rng = state.get("rng_ranks") or []
    mine = ranks_rng[run.world.rank] if len(ranks_rng) == run.world.size else {"cpu": state["rng"]}
    torch.set_rng_state(mine["cpu"])
    if "cuda" in mine and run.device.type == "cuda":
        torch.cuda.set_rng_state(mine["cuda"], run.device)
    run.epoch, run.step, run.best_top1 = state["epoch"], state.get("step", 0), state["best_top1"]
    run.train_seconds, run.rows = state["train_seconds"], state["metrics"]
    run.totals = EpochTotals.from_state(state)
    if run.lookahead is not None:
        run.lookahead.load_state_dict(state["lookahead"])
    if not run.world.is_main:  # the sums so far are all-rank totals, counted by rank 0
        run.totals = EpochTotals(seconds=run.totals.seconds)
    if run.world.is_main:  # drop a row written after this checkpoint, by the run that was killed
        write_text(run.out / "metrics.csv", _metrics_text(run.rows))


def train_epoch(run: Run, epoch: int, stop: StopRequest, progress: bool) -> EpochTotals:
    """The steps of ``epoch`` (from the step a resume starts at), with the mid-epoch checkpoints and
    a stop on request; returns the epoch's totals on this rank."""
    cfg, world, device = run.cfg, run.world, run.device
    first, saved = (run.step, run.totals) if epoch == run.epoch else (0, EpochTotals())
    run.model.train()
    if cfg.freeze_backbone:
        backbone_eval(run.net)
    batches = epoch_batches(run.data.train_ds, cfg, epoch, first, world)
    bar = _progress(batches, run.steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", progress, initial=first)
    t0 = time.perf_counter() - saved.seconds
    loss_sum = torch.full((), saved.loss_sum, device=device)  # on the device: no sync per step
    correct = torch.full((), int(saved.correct), dtype=torch.long, device=device)
    seen = int(saved.images)
    guard = LossGuard(run, stop, epoch)
    for step, (x, y, n) in enumerate(bar, start=first):
        x = run.data.normalize(x.to(device, non_blocking=True))
        if epoch < cfg.low_res_epochs:
            x = F.interpolate(x, size=(cfg.low_res, cfg.low_res), mode="bilinear", antialias=True)
        x = x.contiguous(memory_format=run.memory_format)
        y = y.to(device, non_blocking=True)
        # the loss is a sum over this rank's images / share: DDP's gradient average over ranks is
        # then the mean over the global batch
        share = n / world.size
        guard.step = step
        outputs, loss = train_step(run.model, x, y, lambda out, y: training_loss(out, y, cfg.label_smoothing, share),
                                   run.opt, amp=run.precision.amp, scheduler=run.sched,
                                   hooks=StepHooks(after_loss=guard, after_step=run.lookahead))
        loss_sum += loss.detach() * share
        correct += (main_logits(outputs).detach().argmax(1) == y).sum()
        seen += len(y)
        if progress and step % 20 == 0:
            bar.set_postfix(loss=f"{loss_sum.item() / max(seen, 1):.3f}", acc=f"{correct.item() / max(seen, 1):.3f}",
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}")
        done = step + 1
        if guard.stopping or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < run.steps_per_epoch):
            checkpoint(run, epoch, done, EpochTotals(loss_sum.item(), correct.item(), seen, time.perf_counter() - t0))
        if guard.stopping:
            if progress:
                bar.close()
            interrupted(run, stop, epoch, done)
    return EpochTotals(loss_sum.item(), correct.item(), seen, time.perf_counter() - t0)


class LossGuard:
    """The trainer's ``after_loss`` hook: stops a diverged run before its step, and learns whether
    any rank was asked to stop. Collective, so every rank runs it at the same steps."""

    def __init__(self, run: Run, stop: StopRequest, epoch: int) -> None:
        self.run, self.stop, self.epoch = run, stop, epoch
        self.step = 0
        self.stopping = False

    def __call__(self, loss: torch.Tensor) -> None:
        run = self.run
        # On a GPU, checking every step would stall the pipeline; every 20th step still stops
        # a diverged run long before an epoch's checkpoint could store it.
        if run.device.type != "cpu" and self.step % 20 != 0:
            self.stopping = False
            return
        bad, stopping = dist_util.all_reduce_sum(
            run.world, [not bool(torch.isfinite(loss)), self.stop.signal_name is not None], run.device)
        self.stopping = bool(stopping)
        if bad:
            raise NonFiniteLossError(
                f"loss became {loss.item()} at epoch {self.epoch + 1}, step {self.step + 1} "
                f"(global step {self.epoch * run.steps_per_epoch + self.step + 1}); stopped. The last good checkpoint "
                f"is {run.out / 'train_state.pt'}; try a lower --lr.")


class Lookahead:
    """The trainer's ``after_step`` hook for ``--lookahead DECAY``: every ``EVERY`` steps, and after
    the last, the slow copy of the weights and batch-norm statistics moves toward the trained ones
    by 1 - decay and training continues from it (Zhang et al. 2019, "Lookahead optimizer"). As in
    airbench, decay = DECAY * (step / last step)^3: the first steps run unslowed, and near the end
    the slow copy averages over about 5 / (1 - DECAY) steps (22 at 0.77)."""

    EVERY = 5

    def __init__(self, net: nn.Module, decay: float, total_steps: int) -> None:
        self.fast = {k: v for k, v in net.state_dict().items() if v.is_floating_point()}  # views of the weights
        self.slow = {k: v.detach().clone() for k, v in self.fast.items()}
        self.decay, self.total = decay, total_steps
        self.step = 0  # steps taken

    @torch.no_grad()
    def __call__(self) -> None:
        self.step += 1
        if self.step % self.EVERY and self.step != self.total:
            return
        weight = 1 - self.decay * (self.step / self.total) ** 3
        for name, fast in self.fast.items():
            self.slow[name].lerp_(fast, weight)
            fast.copy_(self.slow[name])

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "slow": {k: v.detach().cpu().clone() for k, v in self.slow.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        for name, slow in self.slow.items():
            slow.copy_(state["slow"][name])


def interrupted(run: Run, stop: StopRequest, epoch: int, done: int) -> None:
    """Raise TrainingInterrupted, telling (on rank 0) how to continue from the checkpoint just written."""
    resume = f"cnnzoo train --resume {run.out}"
    message = (f"stopped by {stop.signal_name} after epoch {epoch + 1} step {done}/{run.steps_per_epoch}; "
               f"checkpoint written to {run.out / 'train_state.pt'}. Continue with: "
               f"{resume if not run.world.distributed else 'torchrun ... -m ' + resume}")
    if run.world.is_main:
        print(message, file=sys.stderr, flush=True)
    raise TrainingInterrupted(message)


def end_epoch(run: Run, epoch: int, totals: EpochTotals, progress: bool) -> None:
    """Evaluate (every ``eval_every`` epochs and after the last), then the metrics row and best
    weights, then the state that points past them (a kill in between only repeats this epoch, which
    reproduces the same rows and weights)."""
    cfg, world, data = run.cfg, run.world, run.data
    run.train_seconds += totals.seconds
    loss_total, correct_total, seen_total = dist_util.all_reduce_sum(
        world, [totals.loss_sum, totals.correct, totals.images], run.device)
    done = epoch + 1
    if done == cfg.epochs or (cfg.eval_every and done % cfg.eval_every == 0):
        run.test = evaluate(run.net, data.test_ds, data.normalize, data.eval_batch_size(cfg), run.device, world,
                            cfg.tta_flip, cfg.tta_shift, run.precision.amp)
    else:
        run.test = not_evaluated()
    test = run.test
    row = dict(epoch=done, train_loss=loss_total / seen_total, train_top1=correct_total / seen_total,
               test_loss=test["loss"], test_top1=test["top1"], test_top5=test["top5"],
               lr=run.opt.param_groups[0]["lr"], epoch_seconds=totals.seconds,
               images_per_second=seen_total / totals.seconds)
    if progress:
        scores = "not evaluated" if math.isnan(test["top1"]) else f"test top-1 {test['top1']:.4f} top-5 {test['top5']:.4f}"
        print(f"epoch {done}/{cfg.epochs}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.4f} | "
              f"{scores} | {totals.seconds:.1f} s", flush=True)
    run.rows.append([f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c]) for c in METRIC_COLUMNS])
    better = test["top1"] > run.best_top1  # False when not evaluated (NaN)
    if better:
        run.best_top1 = test["top1"]
    if world.is_main:
        write_text(run.out / "metrics.csv", _metrics_text(run.rows))
        if better:
            save_weights(run.net, run.out / "best.safetensors", {**run.meta, "epoch": done, "test_top1": test["top1"]})
    checkpoint(run, done, 0, EpochTotals())


def checkpoint(run: Run, epoch_done: int, step_done: int, totals: EpochTotals) -> None:
    """Everything a resume needs, in one file written atomically, then the exported weights.
    Collective (the RNG states of all ranks are gathered), so every rank calls it."""
    world = run.world
    rngs = dist_util.gather_object(world, _rng_state(run.device))
    # The epoch's running sums of all ranks, added up: a resume hands them to rank 0 alone,
    # so that they are counted once, whatever the number of ranks then.
    summed = dist_util.all_reduce_sum(world, [totals.loss_sum, totals.correct, totals.images], run.device)
    totals = EpochTotals(*summed, totals.seconds)
    if not world.is_main:
        return
    save_train_state(run.out / "train_state.pt", dict(
        epoch=epoch_done, step=step_done, model={k: v.detach().cpu().clone() for k, v in run.net.state_dict().items()},
        optimizer=run.opt.state_dict(), scheduler=run.sched.state_dict(), rng=rngs[0]["cpu"], rng_ranks=rngs,
        best_top1=run.best_top1, train_seconds=run.train_seconds, epoch_totals=asdict(totals), metrics=run.rows,
        world_size=world.size, **({"lookahead": run.lookahead.state_dict()} if run.lookahead else {})))
    last_top1 = None if math.isnan(run.test["top1"]) else run.test["top1"]  # no evaluation yet: JSON null, not NaN
    save_weights(run.net, run.out / "last.safetensors", {**run.meta, "epoch": epoch_done, "step": step_done,
                                                         "test_top1": last_top1})


def finish(run: Run) -> dict[str, Any]:
    """The run's summary (summary.json), from the last evaluation."""
    cfg, data = run.cfg, run.data
    if math.isnan(run.test["top1"]):  # resumed a finished run: report its final weights
        run.test = evaluate(run.net, data.test_ds, data.normalize, data.eval_batch_size(cfg), run.device, run.world,
                            cfg.tta_flip, cfg.tta_shift, run.precision.amp)
    test = run.test
    summary = dict(model=cfg.model, dataset=cfg.dataset, epochs=cfg.epochs, test_top1=test["top1"],
                   test_top5=test["top5"], test_loss=test["loss"], best_test_top1=run.best_top1, params=run.params,
                   train_seconds=round(run.train_seconds, 2), train_images=len(data.train_ds),
                   test_images=len(data.test_ds), input_size=list(data.input_size), skipped_images=data.skipped,
                   run_dir=str(run.out), threads=torch.get_num_threads(), device=str(run.device),
                   device_name=dist_util.device_name(run.device), finished=time.strftime("%Y-%m-%d", time.gmtime()),
                   amp=run.precision.amp, precision=run.precision.record(),
                   world_size=run.world.size, deterministic=cfg.deterministic, tta_flip=cfg.tta_flip,
                   tta_shift=cfg.tta_shift)
    if run.world.is_main:
        write_json(run.out / "summary.json", summary)
    return summary


def _progress(it, total: int, desc: str, enabled: bool, initial: int = 0):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)
