"""One training loop, top to bottom: data -> model -> loss -> step -> eval -> checkpoint.

The trainer knows nothing of model families: it asks the registry for a model by name and its
default configuration (input size, normalisation), and everything else is in ``TrainConfig``.
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.checkpoint import (load_train_state, model_meta, save_train_state, save_weights, write_json)
from cnnzoo.data import ImageDataset, Normalize, iterate_batches, load_dataset, resize_to
from cnnzoo.registry import create_model, get_model_cfg


@dataclass
class TrainConfig:
    # what to train on
    model: str = "lenet5"
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    input_size: tuple[int, int, int] | None = None  # (C, H, W); None: the dataset's, fitted to the model
    train_subset: int | None = None                 # images; None: the whole training split
    synthetic_classes: int = 10                      # classes of --dataset synthetic
    skip_bad_images: bool = False                    # imagefolder: skip undecodable files (reported)
    # optimisation (defaults: the LeNet-5 main job, >= 0.905 Fashion-MNIST top-1 in < 60 s on 2 cores)
    epochs: int = 12
    batch_size: int = 128                            # images per step
    lr: float = 3e-3                                 # peak learning rate, after warm-up
    opt: str = "adamw"                               # adamw | sgd (Nesterov, momentum 0.9)
    momentum: float = 0.9                            # sgd only
    weight_decay: float = 0.05                       # on weights only, not on biases / norm layers
    sched: str = "cosine"                            # cosine | step | none, stepped every batch
    warmup_epochs: float = 1.0                       # linear warm-up from 0, in epochs
    label_smoothing: float = 0.0
    # augmentation, on whole uint8 batches
    crop_padding: int = 0                            # random translation, pixels
    flip: bool = False                               # random horizontal flip
    # bookkeeping
    eval_batch_size: int = 1024
    seed: int = 0
    threads: int | None = None                       # torch intra-op threads; None: all cores
    device: str = "cpu"                              # cpu | cuda | cuda:N
    amp: bool = False                                # bfloat16 autocast (no loss scaling needed)
    channels_last: bool = True                       # NHWC memory format: LeNet-5 trains 15-25% faster on CPU
    out: str | None = None                           # run folder; None: runs/<model>-<dataset>-<time>
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in known})
        if cfg.input_size is not None:
            cfg.input_size = tuple(cfg.input_size)
        return cfg


METRIC_COLUMNS = ["epoch", "train_loss", "train_top1", "test_loss", "test_top1", "test_top5", "lr",
                  "epoch_seconds", "images_per_second"]


class NonFiniteLossError(FloatingPointError):
    pass


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
    if cfg.sched not in ("cosine", "step", "none"):
        raise ValueError(f"--sched must be cosine, step or none, got {cfg.sched!r}")

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if cfg.sched == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        if cfg.sched == "step":  # x0.1 at 50% and 75% of training
            return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.inference_mode()
def evaluate(model: nn.Module, ds: ImageDataset, normalize: Normalize, batch_size: int = 1024,
             device: str | torch.device = "cpu") -> dict[str, float]:
    """Top-1, top-5 (top-k with k = min(5, classes)) and mean cross-entropy over ``ds``."""
    was_training = model.training
    model.eval()
    k = min(5, len(ds.classes))
    correct1 = correct5 = 0
    loss_sum = 0.0
    for x, y in iterate_batches(ds, batch_size):
        x, y = normalize(x.to(device)), y.to(device)
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        topk = logits.topk(k, dim=1).indices
        correct1 += (topk[:, 0] == y).sum().item()
        correct5 += (topk == y[:, None]).any(dim=1).sum().item()
    model.train(was_training)
    n = len(ds)
    return {"top1": correct1 / n, "top5": correct5 / n, "loss": loss_sum / n}


def prepare_run_dir(cfg: TrainConfig, resuming: bool) -> Path:
    """Create the run folder and prove it is writable before any training time is spent."""
    out = Path(cfg.out or f"runs/{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
    if not resuming and (out / "config.json").exists():
        raise FileExistsError(f"{out} already holds a run; continue it with --resume {out} or choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-probe"
        probe.write_bytes(b"\0" * 65536)  # a little room for the first checkpoint files
        probe.unlink()
    except OSError as exc:
        raise OSError(f"cannot write to run folder {out}: {exc.strerror or exc}") from exc
    return out


# --------------------------------------------------------------------------------------------------
# The loop


def resume_training(run_dir: str | Path, *, epochs: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Continue the run in ``run_dir`` from its last completed epoch (optionally to more epochs)."""
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
    ``state`` (from train_state.pt) continues a run instead of starting one."""
    out = prepare_run_dir(cfg, resuming=state is not None)
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
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = create_model(cfg.model, num_classes=len(train_ds.classes), in_chans=input_size[0], **cfg.model_kwargs)
    model.default_cfg.update(mean=mean, std=std, input_size=input_size)
    meta = model_meta(model, classes=train_ds.classes, dataset=cfg.dataset, data_dir=cfg.data_dir,
                      data_size=list(data_size))
    params = sum(p.numel() for p in model.parameters())
    model.to(device, memory_format=memory_format)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch)
    start_epoch, best_top1, train_seconds = 0, -1.0, 0.0
    if state is not None:
        from cnnzoo.registry import load_pretrained

        load_pretrained(model, out / "last.safetensors", strict_head=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start_epoch, best_top1, train_seconds = state["epoch"], state["best_top1"], state["train_seconds"]
    else:
        write_json(out / "config.json", {**asdict(cfg), "out": str(out), "input_size": list(input_size),
                                         "mean": mean, "std": std, "classes": train_ds.classes, "params": params})
        with open(out / "metrics.csv", "w", newline="") as f:
            csv.writer(f).writerow(METRIC_COLUMNS)

    # ---- epochs
    test = {"top1": float("nan"), "top5": float("nan"), "loss": float("nan")}
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        g = torch.Generator().manual_seed(cfg.seed * 100003 + epoch)  # order = f(seed, epoch): resumable
        batches = iterate_batches(train_ds, cfg.batch_size, shuffle=True, generator=g,
                                  crop_padding=cfg.crop_padding, flip=cfg.flip)
        bar = _progress(batches, steps_per_epoch, f"epoch {epoch + 1}/{cfg.epochs}", progress)
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        seen = 0
        for step, (x, y) in enumerate(bar):
            x = normalize(x.to(device, non_blocking=True)).contiguous(memory_format=memory_format)
            y = y.to(device, non_blocking=True)
            with autocast:
                outputs = model(x)
                # Models built with auxiliary classifiers return (logits, *aux) in training mode;
                # each auxiliary loss is weighted 0.3, as in the GoogLeNet paper.
                logits, aux = (outputs[0], outputs[1:]) if isinstance(outputs, tuple) else (outputs, ())
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                for aux_logits in aux:
                    loss = loss + 0.3 * F.cross_entropy(aux_logits.float(), y, label_smoothing=cfg.label_smoothing)
            # On a GPU, checking every step would stall the pipeline; every 20th step still stops
            # a diverged run long before an epoch's checkpoint could store it.
            if (device.type == "cpu" or step % 20 == 0) and not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} "
                    f"(global step {epoch * steps_per_epoch + step + 1}); stopped. The last good checkpoint "
                    f"is {out / 'last.safetensors'} (epoch {epoch}); try a lower --lr.")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if progress and step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                                img_s=f"{seen / (time.perf_counter() - t0):.0f}")
        epoch_seconds = time.perf_counter() - t0
        train_seconds += epoch_seconds
        test = evaluate(model, test_ds, normalize, cfg.eval_batch_size, device)
        row = dict(epoch=epoch + 1, train_loss=loss_sum.item() / seen, train_top1=correct.item() / seen,
                   test_loss=test["loss"], test_top1=test["top1"], test_top5=test["top5"],
                   lr=opt.param_groups[0]["lr"], epoch_seconds=epoch_seconds, images_per_second=seen / epoch_seconds)
        if progress:
            print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.4f} | "
                  f"test top-1 {test['top1']:.4f} top-5 {test['top5']:.4f} | {epoch_seconds:.1f} s", flush=True)
        with open(out / "metrics.csv", "a", newline="") as f:
            csv.writer(f).writerow([f"{row[c]:.6g}" if isinstance(row[c], float) else row[c] for c in METRIC_COLUMNS])
        # ---- checkpoint: weights first, then the state that points past them
        save_weights(model, out / "last.safetensors", {**meta, "epoch": epoch + 1, "test_top1": test["top1"]})
        if test["top1"] > best_top1:
            best_top1 = test["top1"]
            save_weights(model, out / "best.safetensors", {**meta, "epoch": epoch + 1, "test_top1": test["top1"]})
        save_train_state(out / "train_state.pt", dict(
            epoch=epoch + 1, optimizer=opt.state_dict(), scheduler=sched.state_dict(),
            rng=torch.get_rng_state(), best_top1=best_top1, train_seconds=train_seconds))

    if math.isnan(test["top1"]):  # resumed a finished run: report its final weights
        from cnnzoo.registry import load_pretrained

        load_pretrained(model, out / "last.safetensors", strict_head=True)
        test = evaluate(model, test_ds, normalize, cfg.eval_batch_size, device)
    summary = dict(model=cfg.model, dataset=cfg.dataset, epochs=cfg.epochs, test_top1=test["top1"],
                   test_top5=test["top5"], test_loss=test["loss"], best_test_top1=best_top1, params=params,
                   train_seconds=round(train_seconds, 2), train_images=len(train_ds), input_size=list(input_size),
                   skipped_images=skipped, run_dir=str(out), threads=torch.get_num_threads(), device=str(device), amp=cfg.amp)
    write_json(out / "summary.json", summary)
    return summary


def _progress(it, total: int, desc: str, enabled: bool):
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, total=total, desc=desc, leave=False, dynamic_ncols=True, mininterval=0.5)
