"""One training loop, top to bottom: data -> model -> loss -> step -> eval -> checkpoint.

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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo import distributed as dist_util
from cnnzoo.checkpoint import (load_train_state, model_meta, remove_stale_temp_files, save_train_state, save_weights,
                               write_json, write_text)
from cnnzoo.data import ImageDataset, Normalize, iterate_batches, load_dataset, resize_to
from cnnzoo.distributed import World
from cnnzoo.registry import create_model, get_model_cfg


@dataclass
class TrainConfig:
    # what to train on
    model: str = "lenet5"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    input_size: tuple[int, int, int] | None = None  # (C, H, W); None: the dataset's, fitted to the model
    train_subset: int | None = None                 # images; None: the whole training split
    test_subset: int | None = None                  # images evaluated after each epoch; None: the whole test split
    synthetic_classes: int = 10                      # classes of --dataset synthetic
    skip_bad_images: bool = False                    # imagefolder: skip undecodable files (reported)
    # optimisation (defaults: the LeNet-5 main job, >= 0.905 Fashion-MNIST top-1 in < 60 s on 2 cores)
    epochs: int = 12
    batch_size: int = 128                            # images per step
    lr: float = 3e-3                                 # peak learning rate, after warm-up
    opt: str = "adamw"                               # adamw | sgd (Nesterov, momentum 0.9)
    momentum: float = 0.9                            # sgd only
    weight_decay: float = 0.05                       # on weights only, not on biases / norm layers
    sched: str = "cosine"                            # cosine | linear (to 0) | step | none, stepped every batch
    warmup_epochs: float = 1.0                       # linear warm-up from 0, in epochs
    label_smoothing: float = 0.0
    # augmentation, on whole uint8 batches
    crop_padding: int = 0                            # random translation, pixels
    flip: bool = False                               # random horizontal flip
    tta_flip: bool = False                           # evaluate on each image and its mirror image, logits averaged
    # bookkeeping
    eval_batch_size: int = 1024
    seed: int = 0
    threads: int | None = None                       # torch intra-op threads; None: all cores
    device: str = "cpu"                              # cpu | cuda | cuda:N
    amp: bool = False                                # bfloat16 autocast (no loss scaling needed)
    channels_last: bool = True                       # NHWC memory format: LeNet-5 trains 15-25% faster on CPU
    # reliability and scale
    checkpoint_every: int = 0                        # also checkpoint every this many steps mid-epoch; 0: epoch ends only
    deterministic: bool = False                      # bit-reproducible: deterministic kernels, thread count fixed in config.json
    sync_bn: bool = False                            # multi-process CUDA runs: batch-norm statistics over all ranks
    out: str | None = None                           # run folder; None: runs/<model>-<dataset>-<time>
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    recipe: str | None = None                        # the RECIPES entry these settings started from (a record)

    @classmethod
    def from_recipe(cls, name: str, **overrides: Any) -> "TrainConfig":
        """The settings of ``RECIPES[name]``, with ``overrides`` on top."""
        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}")
        return cls(**{**RECIPES[name], **overrides, "recipe": name})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        if cfg.input_size is not None:
            cfg.input_size = tuple(cfg.input_size)
        return cfg


# Named sets of settings (``cnnzoo train --recipe NAME``); flags given with it still win.
RECIPES: dict[str, dict[str, Any]] = {
    # >= 93% Fashion-MNIST top-1 in 5 minutes on a 2-core CPU (BENCHMARKS.md). From the CIFAR-10
    # speed records (airbench): a small VGG with a whitened stem, Nesterov SGD with a short warm-up
    # and a linear decay to zero (a one-cycle schedule: most of the accuracy comes in the last,
    # low-learning-rate epochs), label smoothing, random crop and flip, and flip test-time averaging.
    # bfloat16 autocast runs this network 1.8x faster on a CPU with AVX512-BF16 (--no-amp without).
    "fast": dict(model="vgg_airbench", epochs=12, batch_size=256, opt="sgd", lr=0.2, momentum=0.9,
                 weight_decay=5e-4, sched="linear", warmup_epochs=1.0, label_smoothing=0.1, crop_padding=2,
                 flip=True, tta_flip=True, amp=True),
}
# >= 94% in 15 minutes: the same recipe on the network of twice the width (4x the MACs), longer.
RECIPES["fast-long"] = dict(RECIPES["fast"], model="vgg_airbench_wide", epochs=13)


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
                  share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, loss): the cross-entropy summed over the batch and divided by ``share`` (the batch
    size, or under DDP this rank's share of the global batch). Models built with auxiliary
    classifiers return (logits, *aux) in training mode; each auxiliary loss is weighted 0.3, as in
    the GoogLeNet paper."""
    logits, aux = (outputs[0], outputs[1:]) if isinstance(outputs, tuple) else (outputs, ())
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing, reduction="sum") / share
    for aux_logits in aux:
        loss = loss + 0.3 * F.cross_entropy(aux_logits.float(), y, label_smoothing=label_smoothing,
                                            reduction="sum") / share
    return logits, loss


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Weight decay regularises weights; on biases and norm scales it only fights the optimiser.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    if cfg.opt == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"--opt must be sgd or adamw, got {cfg.opt!r}")


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    total = cfg.epochs * steps_per_epoch
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.sched not in ("cosine", "linear", "step", "none"):
        raise ValueError(f"--sched must be cosine, linear, step or none, got {cfg.sched!r}")

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


@torch.inference_mode()
def evaluate(model: nn.Module, ds: ImageDataset, normalize: Normalize, batch_size: int = 1024,
             device: str | torch.device = "cpu", world: World | None = None, tta_flip: bool = False) -> dict[str, float]:
    """Top-1, top-5 (top-k with k = min(5, classes)) and mean cross-entropy over ``ds``; with
    ``tta_flip`` the logits are the mean of the image's and its mirror image's.
    In a world of several ranks each scores every ``world.size``-th image and the sums are added
    up, so that every rank returns the numbers of the whole set at 1/N of the work."""
    world = world or World()
    was_training = model.training
    model.eval()
    k = min(5, len(ds.classes))
    correct1 = correct5 = 0
    loss_sum = 0.0
    shard = torch.arange(world.rank, len(ds), world.size) if world.distributed else None
    for x, y in iterate_batches(ds, batch_size, indices=shard):
        x, y = normalize(x.to(device)), y.to(device)
        logits = model(x)
        if tta_flip:
            logits = (logits + model(x.flip(3))) / 2
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        topk = logits.topk(k, dim=1).indices
        correct1 += (topk[:, 0] == y).sum().item()
        correct5 += (topk == y[:, None]).any(dim=1).sum().item()
    model.train(was_training)
    correct1, correct5, loss_sum = dist_util.all_reduce_sum(world, [correct1, correct5, loss_sum], torch.device(device))
    n = len(ds)
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n}


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
    order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
    steps = math.ceil(len(ds) / cfg.batch_size)
    augment = bool(cfg.crop_padding or cfg.flip)
    for step in range(first_step, steps):
        batch = order[step * cfg.batch_size: (step + 1) * cfg.batch_size]
        n = len(batch)
        lo, hi = n * world.rank // world.size, n * (world.rank + 1) // world.size
        if augment:  # augment the global batch, then slice: the same pixels as one process sees
            g = torch.Generator().manual_seed(((cfg.seed * 100003 + epoch) * 1000003 + step) % 2**63)
            x, y = next(iterate_batches(ds, n, generator=g, crop_padding=cfg.crop_padding, flip=cfg.flip, indices=batch))
            yield x[lo:hi], y[lo:hi], n
        else:
            x, y = next(iterate_batches(ds, n, indices=batch[lo:hi]))
            yield x, y, n


class StopRequest:
    """Turns SIGINT / SIGTERM into a request to stop after the step in flight and a checkpoint.
    A second SIGINT stops at once (KeyboardInterrupt), for a user who will not wait."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
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


def _read_metrics_rows(path: Path, epochs: int) -> list[list[str]]:
    """Rows of an older run's metrics.csv up to ``epochs`` (its state files did not hold them)."""
    if not path.is_file():
        return []
    rows = list(csv.reader(path.read_text().splitlines()))[1:]
    return [r for r in rows if r and int(r[0]) <= epochs]


# --------------------------------------------------------------------------------------------------
# The loop


def resume_training(run_dir: str | Path, *, epochs: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last checkpoint (optionally to more epochs); a
    checkpoint taken mid-epoch continues at the step after it, to the same weights as a run
    never stopped."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file() or not (run_dir / "train_state.pt").is_file():
        raise FileNotFoundError(f"--resume {run_dir}: no run there (config.json and train_state.pt missing)")
    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    cfg.out = str(run_dir)
    if epochs is not None:
        cfg.epochs = epochs
    return train(cfg, state=load_train_state(run_dir / "train_state.pt"), progress=progress)


def train(cfg: TrainConfig, *, state: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train ``cfg.model`` on ``cfg.dataset``; returns the run summary (also in summary.json).
    ``state`` (from train_state.pt) continues a run instead of starting one.

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
            summary = _train(cfg, state, progress, world, stop)
        finished = True
        return summary
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        dist_util.close(world, wait_for_peers=finished)


def _train(cfg: TrainConfig, state: dict[str, Any] | None, progress: bool, world: World,
           stop: StopRequest) -> dict[str, Any]:
    out = prepare_run_dir(cfg, resuming=state is not None, world=world)
    progress = progress and world.is_main
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    # ---- data
    model_cfg = get_model_cfg(cfg.model)
    load_size = cfg.input_size or (None if cfg.dataset in ("fashion-mnist", "mnist") else model_cfg["input_size"])
    common = dict(data_dir=cfg.data_dir, input_size=load_size, num_classes=cfg.synthetic_classes, seed=cfg.seed,
                  skip_bad_images=cfg.skip_bad_images)
    train_ds = load_dataset(cfg.dataset, "train", **common)
    test_ds = load_dataset(cfg.dataset, "test", classes=train_ds.classes, **common)
    skipped = train_ds.skipped + test_ds.skipped
    if skipped and progress:
        print(f"skipped {len(skipped)} undecodable images: {', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}")
    if cfg.train_subset:
        train_ds = train_ds.subset(cfg.train_subset, cfg.seed)
    if cfg.test_subset:
        test_ds = test_ds.subset(cfg.test_subset, cfg.seed)
    data_size = tuple(train_ds.images.shape[1:])
    input_size = fit_input_size(cfg.model, data_size, cfg.input_size)
    train_ds.images = resize_to(train_ds.images, input_size[1:])
    test_ds.images = resize_to(test_ds.images, input_size[1:])
    mean, std = train_ds.channel_stats()
    normalize = Normalize(mean, std)

    # ---- model, optimiser, schedule
    device = torch.device(cfg.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda asked for, but torch sees no CUDA GPU here")
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)  # one GPU per rank
    if cfg.sync_bn and world.distributed and device.type != "cuda":
        raise ValueError("--sync-bn needs --device cuda: torch's SyncBatchNorm has no CPU kernel")
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = create_model(cfg.model, num_classes=len(train_ds.classes), in_chans=input_size[0], **cfg.model_kwargs)
    net.set_pretrained_cfg(mean=mean, std=std, input_size=input_size)
    if hasattr(net, "init_from_data"):  # layers set from the data (a whitened stem): a fixed sample
        sample = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(cfg.seed))[:5000]
        net.init_from_data(normalize(train_ds.images[sample]))
    meta = model_meta(net, classes=train_ds.classes, dataset=cfg.dataset, data_dir=cfg.data_dir,
                      data_size=list(data_size))
    params = sum(p.numel() for p in net.parameters())
    if cfg.sync_bn and world.distributed:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # same parameters and state-dict keys
    net.to(device, memory_format=memory_format)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    opt = build_optimizer(net, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    start_epoch, start_step, best_top1, train_seconds = 0, 0, -1.0, 0.0
    partial = [0.0, 0, 0, 0.0]  # loss sum, correct, images, seconds of an epoch cut by a checkpoint
    rows: list[list[str]] = []
    if state is not None:
        if "model" in state:
            net.load_state_dict(state["model"])
        else:  # a train_state.pt of an older cnnzoo, which kept the weights in last.safetensors only
            from cnnzoo.weights import load_pretrained

            load_pretrained(net, out / "last.safetensors", strict_head=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ranks_rng = state.get("rng_ranks") or []
        mine = ranks_rng[world.rank] if len(ranks_rng) == world.size else {"cpu": state["rng"]}
        torch.set_rng_state(mine["cpu"])
        if "cuda" in mine and device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], device)
        start_epoch, best_top1, train_seconds = state["epoch"], state["best_top1"], state["train_seconds"]
        start_step, partial = state.get("step", 0), list(state.get("epoch_partial", partial))
        if not world.is_main:  # the sums so far are all-rank totals, counted by rank 0
            partial[:3] = [0.0, 0, 0]
        rows = state["metrics"] if "metrics" in state else _read_metrics_rows(out / "metrics.csv", start_epoch)
        if world.is_main:  # drop a row written after this checkpoint, by the run that was killed
            write_text(out / "metrics.csv", _metrics_text(rows))
    elif world.is_main:
        write_json(out / "config.json", {**asdict(cfg), "out": str(out), "input_size": list(input_size),
                                         "mean": mean, "std": std, "classes": train_ds.classes, "params": params})
        write_text(out / "metrics.csv", _metrics_text(rows))
    if world.distributed:
        if state is None:  # each rank its own dropout masks; DDP copies rank 0's weights to all
            torch.manual_seed(cfg.seed * 1000 + world.rank)
        from torch.nn.parallel import DistributedDataParallel

        model: nn.Module = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    else:
        model = net

    def checkpoint(epoch_done: int, step_done: int, epoch_partial: list[float]) -> None:
        """Everything a resume needs, in one file written atomically, then the exported weights.
        Collective (the RNG states of all ranks are gathered), so every rank calls it."""
        rngs = dist_util.gather_object(world, _rng_state(device))
        # The epoch's running sums of all ranks, added up: a resume hands them to rank 0 alone,
        # so that they are counted once, whatever the number of ranks then.
        epoch_partial = [*dist_util.all_reduce_sum(world, epoch_partial[:3], device), epoch_partial[3]]
        if not world.is_main:
            return
        save_train_state(out / "train_state.pt", dict(
            epoch=epoch_done, step=step_done, model={k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
            optimizer=opt.state_dict(), scheduler=sched.state_dict(), rng=rngs[0]["cpu"], rng_ranks=rngs,
            best_top1=best_top1, train_seconds=train_seconds, epoch_partial=epoch_partial, metrics=rows,
            world_size=world.size))
        last_top1 = None if math.isnan(test["top1"]) else test["top1"]  # no evaluation yet: JSON null, not NaN
        save_weights(net, out / "last.safetensors", {**meta, "epoch": epoch_done, "step": step_done,
                                                     "test_top1": last_top1})

    # ---- epochs
    test = {"top1": float("nan"), "top5": float("nan"), "loss": float("nan")}
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        first = start_step if epoch == start_epoch else 0
        acc = partial if epoch == start_epoch else [0.0, 0, 0, 0.0]
        batches = epoch_batches(train_ds, cfg, epoch, first, world)
        bar = _progress(batches, steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", progress, initial=first)
        t0 = time.perf_counter() - acc[3]
        loss_sum = torch.full((), acc[0], device=device)
        correct = torch.full((), int(acc[1]), dtype=torch.long, device=device)
        seen = int(acc[2])
        for step, (x, y, n) in enumerate(bar, start=first):
            x = normalize(x.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            share = n / world.size  # the loss is a sum over this rank's images / share: DDP's gradient
            with autocast:          # average over ranks is then the mean over the global batch
                logits, loss = training_loss(model(x), y, cfg.label_smoothing, share)
            # On a GPU, checking every step would stall the pipeline; every 20th step still stops
            # a diverged run long before an epoch's checkpoint could store it. The same check
            # tells every rank whether any of them was asked to stop.
            stopping = False
            if device.type == "cpu" or step % 20 == 0:
                bad, stopping = dist_util.all_reduce_sum(
                    world, [not bool(torch.isfinite(loss)), stop.signal_name is not None], device)
                if bad:
                    raise NonFiniteLossError(
                        f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                        f"(global step {epoch * steps_per_epoch + step + 1}); stopped. The last good checkpoint "
                        f"is {out / 'train_state.pt'}; try a lower --lr.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * share
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if progress and step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / max(seen, 1):.3f}", acc=f"{correct.item() / max(seen, 1):.3f}",
                                img_s=f"{seen / (time.perf_counter() - t0):.0f}")
            done = step + 1
            if stopping or (cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < steps_per_epoch):
                checkpoint(epoch, done, [loss_sum.item(), correct.item(), seen, time.perf_counter() - t0])
            if stopping:
                if progress:
                    bar.close()
                resume = f"cnnzoo train --resume {out}"
                message = (f"stopped by {stop.signal_name} after epoch {epoch + 1} step {done}/{steps_per_epoch}; "
                           f"checkpoint written to {out / 'train_state.pt'}. Continue with: "
                           f"{resume if not world.distributed else 'torchrun ... -m ' + resume}")
                if world.is_main:
                    print(message, file=sys.stderr, flush=True)
                raise TrainingInterrupted(message)
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        loss_total, correct_total, seen_total = dist_util.all_reduce_sum(
            world, [loss_sum.item(), correct.item(), seen], device)
        test = evaluate(net, test_ds, normalize, cfg.eval_batch_size, device, world, cfg.tta_flip)
        row = dict(epoch=epoch + 1, train_loss=loss_total / seen_total, train_top1=correct_total / seen_total,
                   test_loss=test["loss"], test_top1=test["top1"], test_top5=test["top5"],
                   lr=opt.param_groups[0]["lr"], epoch_seconds=epoch_seconds,
                   images_per_second=seen_total / epoch_seconds)
        if progress:
            print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.4f} | "
                  f"test top-1 {test['top1']:.4f} top-5 {test['top5']:.4f} | {epoch_seconds:.1f} s", flush=True)
        rows.append([f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c]) for c in METRIC_COLUMNS])
        # ---- checkpoint: metrics and best weights, then the state that points past them (a kill
        # in between only repeats this epoch, which reproduces the same rows and weights)
        if world.is_main:
            write_text(out / "metrics.csv", _metrics_text(rows))
            if test["top1"] > best_top1:
                save_weights(net, out / "best.safetensors", {**meta, "epoch": epoch + 1, "test_top1": test["top1"]})
        best_top1 = max(best_top1, test["top1"])
        checkpoint(epoch + 1, 0, [0.0, 0, 0, 0.0])

    if math.isnan(test["top1"]):  # resumed a finished run: report its final weights
        test = evaluate(net, test_ds, normalize, cfg.eval_batch_size, device, world, cfg.tta_flip)
    summary = dict(model=cfg.model, dataset=cfg.dataset, epochs=cfg.epochs, test_top1=test["top1"],
                   test_top5=test["top5"], test_loss=test["loss"], best_test_top1=best_top1, params=params,
                   train_seconds=round(train_seconds, 2), train_images=len(train_ds), test_images=len(test_ds), input_size=list(input_size),
                   skipped_images=skipped, run_dir=str(out), threads=torch.get_num_threads(), device=str(device),
                   amp=cfg.amp, world_size=world.size, deterministic=cfg.deterministic, tta_flip=cfg.tta_flip)
    if world.is_main:
        write_json(out / "summary.json", summary)
    return summary


def _progress(it, total: int, desc: str, enabled: bool, initial: int = 0):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)
