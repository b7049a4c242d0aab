"""The training loop in named parts: build the run -> one epoch of steps -> evaluate -> checkpoint -> finish.

A batch becomes a loss in ``train_epoch`` (``training_loss``, through ``cnnzoo.training.step.train_step``).
The trainer knows nothing of model families: it asks the registry for a model by name and its
default configuration (input size, normalisation), and everything else is in ``TrainConfig``.

The same loop runs as one process or as N under ``torchrun`` (DistributedDataParallel): global
step t always trains on the same ``batch_size`` images, split between the ranks, so N processes
reach the weights one process would (to float rounding). A run can be killed at any instant and
continued with ``--resume``: the state a resume needs is one atomically written file, written at
every epoch end, every ``checkpoint_every`` steps, and on SIGINT / SIGTERM.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.data import shards, stream
from cnnzoo.data.datasets import ImageDataset, Normalize, iterate_batches, load_dataset, resize_to, stratified_split
from cnnzoo.data.seeds import epoch_seed, step_seed
from cnnzoo.data.stream import StreamSource
from cnnzoo.inference.evaluate import evaluate
from cnnzoo.models.checkpoint import model_meta, save_weights
from cnnzoo.models.factory import create_model
from cnnzoo.models.hub import weights_origin
from cnnzoo.models.registry import get_model_cfg
from cnnzoo.training.checkpoint import load_train_state, save_train_state
from cnnzoo.training.config import TrainConfig, experiment_settings
from cnnzoo.training.finetune import (
    InitialCheckpoint,
    backbone_eval,
    classifier_parameters,
    freeze_backbone,
    published_normalization,
    read_initial_checkpoint,
)
from cnnzoo.training.loggers import PICTURE_IMAGES, LogGroup, RunLogs, check_loggers, open_logs
from cnnzoo.training.optim import MUON_MOMENTUM, Muon
from cnnzoo.training.step import StepHooks, main_logits, train_step
from cnnzoo.utils import distributed as dist_util
from cnnzoo.utils.distributed import World
from cnnzoo.utils.io import remove_stale_temp_files, write_json, write_text
from cnnzoo.utils.precision import Precision, resolve_precision

METRIC_COLUMNS = ["epoch", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "lr",
                  "epoch_seconds", "images_per_second"]


class NonFiniteLossError(FloatingPointError):
    pass


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped a run after a step and a checkpoint; ``str()`` says how to resume.
    A KeyboardInterrupt, so that the CLI exits as it does for Ctrl-C (status 130)."""


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
    logs: RunLogs = field(default_factory=RunLogs)  # --log's TensorBoard / MLflow (none: records nothing)

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
          precision: dict[str, Any] | None = None, log_group: LogGroup | None = None) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.dataset``; returns the run summary (also in summary.json).
    ``state`` (from train_state.pt) continues a run instead of starting one, and ``precision``
    (config.json's record) keeps the precision it started in rather than resolving ``cfg.amp`` again.
    ``log_group``: the league or experiment whose MLflow experiment ``--log mlflow`` logs the run in.

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
            run = build_run(cfg, state, world, progress, precision, log_group)
            with run.logs:
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
              recorded_precision: dict[str, Any] | None = None, log_group: LogGroup | None = None) -> Run:
    """Data, model, optimiser and schedule first, so that a wrong name, a missing dataset or a bad
    option fails before the run folder exists; then the folder, the state of a resumed run, and
    its logs."""
    cfg.validate()
    check_loggers(cfg.log)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    initial = read_initial_checkpoint(cfg.initial_checkpoint, cfg.model) if cfg.initial_checkpoint else None
    data = load_run_data(cfg, progress)
    check_low_res(cfg, data.input_size)
    if initial is not None:
        data = initial.fit_normalization(data)
    elif cfg.pretrained or cfg.weights:
        data = published_normalization(data, cfg.model, cfg.weights)
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
    run.logs = open_run_logs(run, log_group, progress)
    return run


def open_run_logs(run: Run, group: LogGroup | None, progress: bool) -> RunLogs:
    """--log's loggers, continuing after the run's checkpoint; the run named by its folder (in a
    group, by its folder below the group's)."""
    cfg = run.cfg
    if not cfg.log:
        return RunLogs()
    name = str(run.out.resolve().relative_to(group.root.resolve())) if group else run.out.name
    pictures = (run.data.test_ds.sample_images(PICTURE_IMAGES, cfg.seed), run.data.normalize) if run.world.is_main \
        else None
    return open_logs(cfg.log, run.out, every=cfg.log_every, world=run.world, device=run.device, params=asdict(cfg),
                     run_name=name, group=group, pictures=pictures, progress=progress)


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
        run.logs.step(epoch * run.steps_per_epoch + done, loss_sum, correct, seen, time.perf_counter() - t0,
                      run.opt.param_groups[0]["lr"])
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
    log_epoch(run, done, row)
    checkpoint(run, done, 0, EpochTotals())


def log_epoch(run: Run, done: int, row: dict[str, float]) -> None:
    """The epoch's metrics.csv row and pictures to --log's loggers; after the last epoch, the
    settings with the final scores too."""
    step = done * run.steps_per_epoch
    run.logs.scalars(step, {f"epoch/{k}": v for k, v in row.items()})
    run.logs.pictures(step, run.net)
    if done == run.cfg.epochs:
        run.logs.hparams(step, dict(test_top1=run.test["top1"], test_top5=run.test["top5"], test_loss=run.test["loss"],
                                    best_test_top1=run.best_top1, train_seconds=run.train_seconds))


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
    run.logs.checkpoint()  # before the resume point: what the logs hold up to it must be on disk with it
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
