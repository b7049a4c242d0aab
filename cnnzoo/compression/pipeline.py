"""Deep Compression end to end (Han, Mao, Dally 2016): prune -> retrain -> share weights by k-means
-> fine-tune the shared values -> Huffman-code, written as one .cnnz file, with a report laid out
like the paper's Tables 2-5 (per layer: weights, % kept, bits, bytes after each stage; in total:
fp32 size, file size on disk, ratio, and test top-1 after each lossy stage).
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import time
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.compression.kmeans import INITS, QuantizedWeight, quantize_weight
from cnnzoo.compression.prune import (
    apply_masks,
    check_spec_keys,
    layer_kind,
    lookup,
    magnitude_mask,
    mask_gradients,
    parse_layer_spec,
    prunable_weights,
)
from cnnzoo.data.datasets import ImageDataset, Normalize, iterate_batches
from cnnzoo.data.seeds import epoch_seed
from cnnzoo.inference import cnnz
from cnnzoo.inference.checkpoint_data import checkpoint_split
from cnnzoo.inference.cnnz import load_compressed
from cnnzoo.inference.evaluate import evaluate
from cnnzoo.inference.load import load_model
from cnnzoo.models.checkpoint import load_checkpoint
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.loggers import PICTURE_IMAGES, RunLogs, open_logs
from cnnzoo.training.recipes import load_compress_defaults
from cnnzoo.training.step import LossFn, StepHooks, main_logits, train_step
from cnnzoo.utils.distributed import World
from cnnzoo.utils.io import atomic_write, write_json, write_text


@dataclass
class CompressConfig:
    """Every setting of a compression. ``None``: the model's tuned value (``MODEL_DEFAULTS``), else
    ``SCHEDULE_DEFAULTS``'. Epochs may be fractional; learning rates are AdamW's."""
    # data
    dataset: str | None = None          # default: the dataset the run was trained on
    data_dir: str | None = None
    train_subset: int | None = None     # retrain on a seeded random subset of this many images
    model_kwargs: dict[str, Any] | None = None  # constructor arguments on top of the checkpoint's (e.g. drop_rate)
    threads: int | None = None          # torch's CPU threads; None: torch's default
    # pruning, then retraining with the pruned weights held at zero
    prune_quality: float | None = None  # prune |w| < quality x std(w) in every layer (the paper's rule)
    sparsity: str | dict | None = None  # fractions to prune per layer, e.g. "c5=0.95,fc=0.9"; neither: tuned
    prune_iters: int = 4                # the target is reached in this many pruning steps
    prune_epochs: float = 3.0           # retraining after each pruning step but the last (epochs)
    final_epochs: float | None = None   # retraining after the last, where the most is lost (epochs)
    lr: float | None = None             # peak learning rate of the pruned retraining
    weight_decay: float | None = None   # decoupled, on the free conv/linear weights only
    # weight sharing, then fine-tuning of the shared values
    bits: str | dict | None = None      # codebook bits per layer, e.g. "conv=8,fc=5" (2^bits values)
    init: str = "linear"                # k-means initialisation (INITS)
    quant_epochs: float | None = None   # centroid fine-tuning (epochs)
    centroid_lr: float | None = None    # peak learning rate of the shared values
    quant_lr_scale: float = 0.1         # the free weights' (biases') rate during centroid fine-tuning, x lr
    dense_dtype: str = "fp16"           # storage of codebooks, biases and batch-norm tensors: fp16 | fp32
    # every retraining
    batch_size: int = 128               # images per step
    distill: bool | None = None         # add the KL divergence to the uncompressed model's softened outputs
    temperature: float = 4.0            # distillation's softening of both outputs (Hinton et al. 2015)
    crop_padding: int | None = None     # random translation, pixels
    flip: bool | None = None            # random horizontal flips
    channels_last: bool = False         # faster CPU convolutions, but another rounding path
    seed: int = 0                       # pruning step i retrains with seed + i, the centroids with seed + quant_seed
    quant_seed: int = 1000
    order_seed: int = 7919              # retraining orders: epoch_seed(seed, order_seed + epoch), not the trainer's
    # watching the retraining: `cnnzoo train --log`'s loggers, in <OUT stem>.logs/ beside OUT
    log: list[str] = field(default_factory=list)
    log_every: int = TrainConfig.log_every  # steps between records of the running loss, top-1, lr, images/s

    def for_model(self, model_name: str) -> CompressConfig:
        """This config with every ``None`` schedule value set to ``model_name``'s default."""
        schedule = {**SCHEDULE_DEFAULTS, **MODEL_DEFAULTS.get(model_name, {}).get("schedule", {})}
        return replace(self, **{k: v for k, v in schedule.items() if getattr(self, k) is None})

    def check(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"--init must be one of {INITS}, got {self.init!r}")
        if self.prune_iters < 1:
            raise ValueError(f"--prune-iters must be >= 1, got {self.prune_iters}")
        if self.crop_padding is not None and self.crop_padding < 0:
            raise ValueError(f"--crop-padding must be >= 0, got {self.crop_padding}")


# Per-model pruning targets and bits, tuned on Fashion-MNIST runs of `cnnzoo train`, the generic
# model's, and the retraining schedule: cnnzoo/training/recipes/compress/defaults.toml, each with its reason.
MODEL_DEFAULTS, GENERIC_DEFAULTS, SCHEDULE_DEFAULTS = load_compress_defaults(typing.get_type_hints(CompressConfig))


def _load_data(meta: dict[str, Any], model: nn.Module, dataset: str | None, data_dir: str | None,
               train_subset: int | None, seed: int) -> tuple[ImageDataset, ImageDataset, Normalize]:
    """Train (``train_subset`` of it, picked with ``seed``) and test splits, as training prepared
    them (``checkpoint_split``)."""
    common = dict(dataset=dataset, data_dir=data_dir)
    train_ds, normalize = checkpoint_split(model.pretrained_cfg, meta, "train", images=train_subset or None,
                                           seed=seed, **common)
    test_ds, _ = checkpoint_split(model.pretrained_cfg, meta, "test", **common)
    return train_ds, test_ds, normalize


def finetune(model: nn.Module, train_ds: ImageDataset, normalize: Normalize, *, epochs: float, lr: float,
             batch_size: int = 128, seed: int = 0, masks: dict[str, torch.Tensor] | None = None,
             quantized: dict[str, QuantizedWeight] | None = None, centroid_lr: float | None = None,
             weight_decay: float = 0.0, teacher: nn.Module | torch.Tensor | None = None,
             temperature: float = CompressConfig.temperature, order_seed: int = CompressConfig.order_seed,
             crop_padding: int = 0, flip: bool = False, channels_last: bool = False, progress: bool = False,
             logs: RunLogs | None = None, first_step: int = 0) -> int:
    """Retrain with the compression constraints held (``constraint_hooks``): ``masks`` keep pruned
    weights at zero, ``quantized`` layers train only their shared values. AdamW, the learning rate
    cosine-decayed to 0 over ``epochs`` (may be fractional); ``weight_decay`` on the free conv/linear
    weights only (the paper's L2 retraining). ``teacher`` (the uncompressed model, or its logits for
    every image of ``train_ds``: ``teacher_logits``) adds distillation at ``temperature``.
    ``channels_last`` retrains in that layout (faster CPU convolutions, other rounding); the model is
    handed back in the default layout. ``logs`` records the running loss and top-1 of the steps,
    numbered from ``first_step`` + 1. Returns the number of steps taken."""
    if isinstance(teacher, torch.Tensor) and (crop_padding or flip):
        raise ValueError("precomputed teacher logits hold for unaugmented images only; pass the teacher model")
    if epochs <= 0:
        return 0
    logs = logs or RunLogs()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    quantized = quantized or {}
    opt = _retrain_optimizer(model, quantized, lr, centroid_lr or lr, weight_decay)
    base_lrs = [g["lr"] for g in opt.param_groups]
    steps_per_epoch = math.ceil(len(train_ds) / batch_size)
    total = retrain_steps(epochs, len(train_ds), batch_size)
    constraints = constraint_hooks(model, masks or {}, quantized)
    model.train()
    batches = _retrain_batches(train_ds, batch_size, total, seed, order_seed, crop_padding, flip)
    loss_sum, correct, seen, t0 = torch.zeros(()), torch.zeros((), dtype=torch.long), 0, time.perf_counter()
    for step, index, x, y in batches:
        for group, base in zip(opt.param_groups, base_lrs):
            group["lr"] = base * 0.5 * (1 + math.cos(math.pi * step / total))
        x = normalize(x).contiguous(memory_format=layout)
        hooks = replace(constraints, after_loss=functools.partial(_check_finite, step=step))
        outputs, loss = train_step(model, x, y, distillation_loss(teacher, temperature, x, index), opt, hooks=hooks)
        loss_sum += loss.detach() * len(y)
        correct += (main_logits(outputs).detach().argmax(1) == y).sum()
        seen += len(y)
        logs.step(first_step + step + 1, loss_sum, correct, seen, time.perf_counter() - t0, opt.param_groups[0]["lr"])
        if progress and ((step + 1) % steps_per_epoch == 0 or step + 1 == total):
            print(f"  fine-tune step {step + 1}/{total}: batch loss {loss.item():.4f}", flush=True)
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return total


def retrain_steps(epochs: float, images: int, batch_size: int) -> int:
    """The steps of a retraining of ``epochs`` (may be fractional; none for 0) over ``images``."""
    return max(1, int(round(epochs * math.ceil(images / batch_size)))) if epochs > 0 else 0


def _retrain_optimizer(model: nn.Module, quantized: dict[str, QuantizedWeight], lr: float, centroid_lr: float,
                       weight_decay: float) -> torch.optim.AdamW:
    """AdamW over the free weights (decayed), biases and norm scales (not decayed) and the shared
    values of ``quantized`` layers in place of their weights."""
    free = [p for n, p in model.named_parameters() if n not in quantized]
    groups: list[dict[str, Any]] = [{"params": [p for p in free if p.ndim > 1], "lr": lr, "weight_decay": weight_decay},
                                    {"params": [p for p in free if p.ndim <= 1], "lr": lr, "weight_decay": 0.0}]
    if quantized:
        groups.append({"params": [q.centroids for q in quantized.values()], "lr": centroid_lr, "weight_decay": 0.0})
    return torch.optim.AdamW(groups)


def _retrain_batches(ds: ImageDataset, batch_size: int, total: int, seed: int, order_seed: int, crop_padding: int,
                     flip: bool) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(step, image indices, images, labels) for ``total`` steps, epoch after epoch; the order and the
    augmentation of epoch e are drawn from ``epoch_seed(seed, order_seed + e)``."""
    step, epoch = 0, 0
    while step < total:
        g = torch.Generator().manual_seed(epoch_seed(seed, order_seed + epoch))
        order = torch.randperm(len(ds), generator=g)
        batches = iterate_batches(ds, batch_size, generator=g, indices=order, crop_padding=crop_padding, flip=flip)
        for start, (x, y) in zip(range(0, len(order), batch_size), batches):
            if step >= total:
                return
            yield step, order[start: start + batch_size], x, y
            step += 1
        epoch += 1


def constraint_hooks(model: nn.Module, masks: dict[str, torch.Tensor],
                     quantized: dict[str, QuantizedWeight]) -> StepHooks:
    """Training-step hooks that hold the compression: pruned weights get no gradient and are
    re-zeroed after each step; a shared value's gradient is the sum of its weights' (the paper's
    Fig. 3), and its weights are rebuilt from it after each step."""
    params = dict(model.named_parameters())

    def after_gradients() -> None:
        if masks:
            mask_gradients(model, masks)
        for name, q in quantized.items():
            q.accumulate_grad(params[name].grad)
            params[name].grad = None

    @torch.no_grad()
    def after_step() -> None:
        if masks:
            apply_masks(model, masks)
        for name, q in quantized.items():
            params[name].copy_(q.dense())

    return StepHooks(after_gradients=after_gradients, after_step=after_step)


def distillation_loss(teacher: nn.Module | torch.Tensor | None, temperature: float, x: torch.Tensor,
                      index: torch.Tensor) -> LossFn:
    """Cross-entropy, plus with ``teacher`` the KL divergence to its outputs on the batch ``x``
    (images ``index`` of the set, for precomputed logits), both softened by ``temperature``: the
    teacher's other classes tell the smaller network more per image than the label alone."""
    def loss_fn(outputs: Any, y: torch.Tensor) -> torch.Tensor:
        logits = main_logits(outputs)
        loss = F.cross_entropy(logits, y)
        if teacher is None:
            return loss
        with torch.no_grad():
            target = teacher[index] if isinstance(teacher, torch.Tensor) else teacher(x)
        return loss + temperature ** 2 * F.kl_div(F.log_softmax(logits / temperature, dim=1),
                                                  F.log_softmax(target / temperature, dim=1),
                                                  reduction="batchmean", log_target=True)
    return loss_fn


def _check_finite(loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise FloatingPointError(f"fine-tuning loss became {loss.item()} at step {step}; try a lower --lr")


@torch.no_grad()
def teacher_logits(teacher: nn.Module, ds: ImageDataset, normalize: Normalize, batch_size: int = 1024) -> torch.Tensor:
    """The (uncompressed) model's logits for every image of ``ds``, in order: computed once, they
    stand in for its forward pass at every retraining step."""
    teacher.eval()
    return torch.cat([main_logits(teacher(normalize(x))) for x, _ in iterate_batches(ds, batch_size)])


def _spec_with_defaults(model_name: str, weights: dict[str, nn.Parameter], prune_quality: float | None,
                        sparsity: str | dict | None, bits: str | dict | None) -> tuple[dict, dict]:
    defaults = MODEL_DEFAULTS.get(model_name, GENERIC_DEFAULTS)
    names = list(weights)
    sp = parse_layer_spec(sparsity, "--sparsity")
    check_spec_keys(sp, names, "--sparsity")
    if prune_quality is None and not sp:
        sp = dict(defaults["sparsity"])
    user_bits = parse_layer_spec(bits, "--bits", cast=int)
    check_spec_keys(user_bits, names, "--bits")
    # a layer takes the most specific key the user gave, else the model's default (else 8 bits)
    b = {n[: -len(".weight")]: int(lookup(user_bits, n, w, lookup(defaults["bits"], n, w, 8)))
         for n, w in weights.items()}
    for k, v in sp.items():
        if not 0.0 <= v < 1.0:
            raise ValueError(f"--sparsity: {k}={v} is not a fraction in [0, 1)")
    for k, v in b.items():
        if not 1 <= v <= 16:
            raise ValueError(f"--bits: {k}={v} is outside 1..16")
    return sp, b


def compress(checkpoint: str | Path | None, out: str | Path, config: CompressConfig | None = None, *,
             progress: bool = True, model_name: str | None = None, pretrained: bool | str | Path | None = None,
             **settings: Any) -> dict[str, Any]:
    """Deep-Compress the model of a run folder (or ``model_name`` with ``pretrained`` weights, see
    ``predict.load_model``) into ``out`` (.cnnz); returns the report, also written
    next to ``out`` as ``<stem>.report.json`` and ``<stem>.report.md``. The settings are
    ``config``'s, with ``settings`` (CompressConfig's fields, as keywords) on top; without
    ``prune_quality`` or ``sparsity``, the model's tuned pruning applies. Each finished pruning step
    is kept in ``OUT.partial`` until the file is written: an interrupted compression, run again,
    continues from there (``PartialCompression``)."""
    t0 = time.perf_counter()
    cfg = replace(config or CompressConfig(), **settings)
    cfg.check()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if checkpoint is None:
        model, meta = load_model(None, model_name, pretrained=pretrained, model_kwargs=cfg.model_kwargs)
    else:
        model, meta = load_checkpoint(checkpoint, model_name, cfg.model_kwargs)
    cfg = cfg.for_model(meta["model"])
    weights = prunable_weights(model)
    sparsity, bits = _spec_with_defaults(meta["model"], weights, cfg.prune_quality, cfg.sparsity, cfg.bits)
    train_ds, test_ds, normalize = _load_data(meta, model, cfg.dataset, cfg.data_dir, cfg.train_subset, cfg.seed)
    log = print if progress else (lambda *a, **k: None)
    top1 = lambda: evaluate(model, test_ds, normalize)["top1"]  # noqa: E731

    accuracy = {"before": top1()}
    log(f"{meta['model']}: test top-1 {accuracy['before']:.4f} before compression")
    out = Path(out)
    resolved = _settings(cfg, sparsity, bits, len(train_ds))
    logs = open_logs(cfg.log, out.with_name(out.stem + ".logs"), every=cfg.log_every, world=World(),
                     device=torch.device("cpu"), params=dict(model=meta["model"], checkpoint=str(checkpoint),
                                                             **resolved),
                     run_name=out.stem, pictures=(test_ds.sample_images(PICTURE_IMAGES, cfg.seed), normalize),
                     progress=progress)
    with logs:
        retrain = Retraining(model, train_ds, normalize, cfg, logs)  # its teacher: the uncompressed model
        partial = PartialCompression(out, dict(source=_fingerprint(model), model=meta["model"], **resolved))
        masks, resumed = _prune_resumably(model, weights, sparsity, cfg, retrain, top1, log, partial)
        accuracy["pruned"] = top1()
        quantized = share_weights(model, weights, masks, bits, cfg)
        accuracy["clustered"] = top1()
        logs.scalars(retrain.steps, {"quantize/clustered_top1": accuracy["clustered"]})
        retrain(epochs=cfg.quant_epochs, lr=cfg.lr * cfg.quant_lr_scale, seed=cfg.seed + cfg.quant_seed,
                quantized=quantized, centroid_lr=cfg.centroid_lr)
        state, encodings = round_to_storage(model, quantized, cfg.dense_dtype)
        accuracy["quantized"] = top1()
        log(f"quantized: test top-1 {accuracy['quantized']:.4f} "
            f"(before centroid fine-tuning {accuracy['clustered']:.4f})")

        stats = encode(out, meta, state, encodings, quantized, cfg.dense_dtype)
        exact = _rebuilds_exactly(out, model, test_ds, normalize)
        partial.path.unlink(missing_ok=True)
        report = _report(meta["model"], state, quantized, stats, out.stat().st_size, accuracy)
        logs.scalars(retrain.steps, {"quantize/test_top1": accuracy["quantized"]})
        logs.pictures(retrain.steps, model)
        logs.hparams(retrain.steps, {**{f"top1_{k}": v for k, v in accuracy.items()},
                                     "ratio": report["totals"]["ratio"], "file_bytes": report["totals"]["file_bytes"]})
    report.update(checkpoint=str(checkpoint), out=str(out), dataset=meta.get("dataset") if cfg.dataset is None else cfg.dataset,
                  settings=resolved, roundtrip_exact=exact, resumed_after_step=resumed,
                  seconds=round(time.perf_counter() - t0, 1))
    write_json(out.with_suffix(".report.json"), report)
    write_text(out.with_suffix(".report.md"), report_markdown(report))
    return report


class Retraining:
    """``finetune`` with what every retraining of a compression shares: the uncompressed network
    as the teacher when distilling (its logits, computed once, when the images are not augmented),
    the batch size, weight decay, augmentation and layout; and the logs, whose x-axis is the count
    of ``steps`` of all the retrainings so far."""

    def __init__(self, model: nn.Module, train_ds: ImageDataset, normalize: Normalize, cfg: CompressConfig,
                 logs: RunLogs) -> None:
        teacher = None
        if cfg.distill:
            teacher = (copy.deepcopy(model).eval() if cfg.crop_padding or cfg.flip
                       else teacher_logits(model, train_ds, normalize))
        self.images, self.batch_size, self.logs, self.steps = len(train_ds), cfg.batch_size, logs, 0
        self.common = dict(batch_size=cfg.batch_size, teacher=teacher, temperature=cfg.temperature,
                           order_seed=cfg.order_seed, weight_decay=cfg.weight_decay, crop_padding=cfg.crop_padding,
                           flip=cfg.flip, channels_last=cfg.channels_last, logs=logs)
        self.model, self.train_ds, self.normalize = model, train_ds, normalize

    def __call__(self, **kwargs: Any) -> None:
        self.steps += finetune(self.model, self.train_ds, self.normalize, first_step=self.steps, **self.common,
                               **kwargs)

    def skip(self, epochs: float) -> None:
        """Count a retraining of ``epochs`` that an interrupted compression finished."""
        self.steps += retrain_steps(epochs, self.images, self.batch_size)


def prune(model: nn.Module, weights: dict[str, nn.Parameter], sparsity: dict[str, float], cfg: CompressConfig,
          retrain: Callable[..., None], top1: Callable[[], float], log: Callable[..., None], *,
          std0: dict[str, float], start: int = 0, masks: dict[str, torch.Tensor] | None = None,
          after_step: Callable[..., None] | None = None) -> dict[str, torch.Tensor]:
    """Prune in ``cfg.prune_iters`` steps, retraining with the masks fixed after each; returns the
    masks. ``std0``: each layer's weight spread before pruning (the quality rule's unit); ``start``
    steps are already done (their ``masks`` given); ``after_step(step, model, masks, scores)`` after
    each, with the share of weights kept and the test top-1 (``kept``, ``test_top1``)."""
    masks = dict(masks or {})
    for it in range(start + 1, cfg.prune_iters + 1):
        frac = it / cfg.prune_iters
        for n, w in weights.items():
            s = lookup(sparsity, n, w, None)
            if cfg.prune_quality is not None and s is None:
                masks[n] = magnitude_mask(w, quality=cfg.prune_quality * frac, previous=masks.get(n), std=std0[n])
            else:
                # the kept fraction shrinks geometrically (1, k^(1/n), k^(2/n), ... k): each step
                # removes the same share of what is left, so the last step is no bigger than the first
                masks[n] = magnitude_mask(w, sparsity=1.0 - (1.0 - (s or 0.0)) ** frac, previous=masks.get(n))
        apply_masks(model, masks)
        retrain(epochs=_prune_epochs(cfg, it), lr=cfg.lr, seed=cfg.seed + it, masks=masks)
        kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        score = top1()
        log(f"prune step {it}/{cfg.prune_iters}: {kept:.1%} of conv/fc weights kept, test top-1 {score:.4f}")
        if after_step is not None:
            after_step(it, model, masks, dict(kept=kept, test_top1=score))
    return masks


def _prune_epochs(cfg: CompressConfig, it: int) -> float:
    """The retraining after pruning step ``it`` (epochs): the last one's is longer."""
    return cfg.final_epochs if it == cfg.prune_iters else cfg.prune_epochs


def _prune_resumably(model: nn.Module, weights: dict[str, nn.Parameter], sparsity: dict[str, float],
                     cfg: CompressConfig, retrain: Retraining, top1: Callable[[], float],
                     log: Callable[..., None], partial: PartialCompression) -> tuple[dict[str, torch.Tensor], int]:
    """``prune``, continuing after the steps ``partial`` holds and keeping each finished step there
    (with its scores and pictures in the logs first); returns (masks, steps restored)."""
    std0 = {n: float(w.detach().std()) for n, w in weights.items()}  # before a restore replaces the weights
    done, masks = partial.restore(model, weights)
    if done:
        log(f"continuing after pruning step {done}/{cfg.prune_iters}, restored from {partial.path}")
    for it in range(1, done + 1):
        retrain.skip(_prune_epochs(cfg, it))

    def after_step(it: int, model: nn.Module, masks: dict[str, torch.Tensor], scores: dict[str, float]) -> None:
        retrain.logs.scalars(retrain.steps, {f"prune/{k}": v for k, v in scores.items()})
        retrain.logs.pictures(retrain.steps, model)
        retrain.logs.checkpoint()
        partial.save(it, model, masks)

    try:
        return prune(model, weights, sparsity, cfg, retrain, top1, log, std0=std0, start=done, masks=masks,
                     after_step=after_step), done
    except KeyboardInterrupt:
        if partial.path.is_file():
            log(f"interrupted; the finished pruning steps are kept in {partial.path}: run the same command to continue")
        raise


def _fingerprint(model: nn.Module) -> str:
    """SHA-256 of the model's tensors: which weights a compression started from."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class PartialCompression:
    """The pruning steps a compression has finished, kept in ``OUT.partial`` until the .cnnz file is
    written: safetensors with the weights, masks and random state after the last finished step, the
    source's fingerprint and the settings. Pruning and its retraining take most of a compression's
    time; run again with the same source and settings, it continues after that step, to the same bits."""
    MASK, RNG = "cnnzoo:mask:", "cnnzoo:rng"  # a colon is in no parameter name

    def __init__(self, out: Path, key: dict[str, Any]) -> None:
        self.path = out.with_name(out.name + ".partial")
        self.key = json.loads(json.dumps(key, default=str))  # as it reads back from the file

    def restore(self, model: nn.Module, weights: dict[str, nn.Parameter]) -> tuple[int, dict[str, torch.Tensor]]:
        """(steps done, their masks), with the model's weights and the random state put back; (0, {})
        when there is nothing to continue."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not self.path.is_file():
            return 0, {}
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
            saved = json.loads(meta["key"])
        except Exception as exc:
            raise ValueError(f"{self.path} is not a readable partial compression ({exc}); delete it to start over") from exc
        if saved != self.key:
            diff = [f"{k} {saved.get(k)!r}, now {self.key.get(k)!r}" for k in sorted(set(saved) | set(self.key))
                    if saved.get(k) != self.key.get(k)]
            raise ValueError(f"{self.path} holds an interrupted compression of other weights or settings "
                             f"({'; '.join(diff)}); run it with those to continue it, or delete the file to start "
                             "over (nothing was deleted)")
        tensors = load_file(str(self.path))
        model.load_state_dict({k: v for k, v in tensors.items() if not k.startswith((self.MASK, self.RNG))})
        torch.set_rng_state(tensors[self.RNG])
        masks = {n: tensors[self.MASK + n].bool() for n in weights}
        return int(meta["steps_done"]), masks

    def save(self, step: int, model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        tensors.update({self.MASK + n: m.to(torch.uint8).contiguous() for n, m in masks.items()})
        tensors[self.RNG] = torch.get_rng_state()
        meta = {"key": json.dumps(self.key), "steps_done": str(step)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def share_weights(model: nn.Module, weights: dict[str, nn.Parameter], masks: dict[str, torch.Tensor],
                  bits: dict[str, int], cfg: CompressConfig) -> dict[str, QuantizedWeight]:
    """k-means the kept weights of every layer into 2^bits shared values, and put those in the model."""
    g = torch.Generator().manual_seed(cfg.seed)
    quantized = {n: quantize_weight(n, w, masks[n], int(lookup(bits, n, w, 8)), init=cfg.init, generator=g)
                 for n, w in weights.items()}
    with torch.no_grad():
        for n, q in quantized.items():
            weights[n].copy_(q.dense())
    return quantized


@torch.no_grad()
def round_to_storage(model: nn.Module, quantized: dict[str, QuantizedWeight],
                     dense_dtype: str) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """Round what the file stores (codebooks, other tensors) to its stored precision, in the model,
    so that memory == file exactly. Returns (state dict, encoding of each tensor stored dense)."""
    params = dict(model.named_parameters())
    for n, q in quantized.items():
        q.centroids = cnnz.round_codebook(q.centroids, _codebook_dtype(dense_dtype))
        params[n].copy_(q.dense())
    state = model.state_dict()
    encodings: dict[str, int] = {}
    for n, t in state.items():
        if n not in quantized:
            encodings[n] = cnnz.dense_encoding(t, dense_dtype)
            t.copy_(cnnz.round_to_encoding(t, encodings[n]))
    return state, encodings


def _codebook_dtype(dense_dtype: str) -> int:
    return 1 if dense_dtype == "fp16" else 0


def encode(out: Path, meta: dict[str, Any], state: dict[str, torch.Tensor], encodings: dict[str, int],
           quantized: dict[str, QuantizedWeight], dense_dtype: str) -> dict[str, dict[str, Any]]:
    """Huffman-code the model into the .cnnz file ``out``; returns each tensor's coding statistics."""
    file_meta = {k: meta[k] for k in ("model", "num_classes", "in_chans", "kwargs", "input_size", "mean", "std",
                                      "classes", "dataset", "data_dir", "data_size") if k in meta}
    dense = {n: t for n, t in state.items() if n not in quantized}
    blob, stats = cnnz.encode_file(file_meta, dense, encodings, quantized, _codebook_dtype(dense_dtype))
    out.parent.mkdir(parents=True, exist_ok=True)
    cnnz.write_cnnz(out, blob)
    return stats


def _rebuilds_exactly(out: Path, model: nn.Module, test_ds: ImageDataset, normalize: Normalize) -> bool:
    """The file must rebuild the very model in memory: same logits, bit for bit."""
    x, _ = next(iterate_batches(test_ds, 256))
    rebuilt = load_compressed(out)
    with torch.no_grad():
        exact = bool(torch.equal(model.eval()(normalize(x)), rebuilt(normalize(x))))
    if not exact:
        raise RuntimeError(f"{out}: the rebuilt model's logits differ from the compressed model's (a bug)")
    return exact


def _settings(cfg: CompressConfig, sparsity: dict[str, float], bits: dict[str, int], train_images: int) -> dict[str, Any]:
    """The settings the report records (the resolved defaults included)."""
    return dict(prune_quality=cfg.prune_quality,
                sparsity=None if cfg.prune_quality is not None and not cfg.sparsity else sparsity, bits=bits,
                prune_iters=cfg.prune_iters, prune_epochs=cfg.prune_epochs, final_epochs=cfg.final_epochs,
                quant_epochs=cfg.quant_epochs, lr=cfg.lr, centroid_lr=cfg.centroid_lr, weight_decay=cfg.weight_decay,
                init=cfg.init, dense_dtype=cfg.dense_dtype, train_images=train_images, distill=cfg.distill,
                crop_padding=cfg.crop_padding, flip=cfg.flip, channels_last=cfg.channels_last, seed=cfg.seed)


def _report(model_name: str, state: dict[str, torch.Tensor], quantized: dict[str, QuantizedWeight],
            stats: dict[str, dict[str, Any]], file_bytes: int, top1: dict[str, float]) -> dict[str, Any]:
    layers = []
    for n, q in quantized.items():
        s = stats[n]
        numel = math.prod(q.shape)
        kept = len(q.positions)
        entries = s["entries"]
        layers.append(dict(
            layer=n[: -len(".weight")], kind=layer_kind(state[n]), weights=numel, kept=kept,
            kept_pct=round(100.0 * kept / numel, 2), bits=q.bits, centroids=len(q.centroids), gap_bits=s["gap_bits"],
            fillers=s["fillers"], fp32_bytes=numel * 4,
            # after pruning: each surviving weight as fp32 plus its relative index (the paper's sparse format)
            pruned_bytes=math.ceil(entries * (32 + s["gap_bits"]) / 8),
            # after quantization: a bits-wide index per entry, the gap field, and the codebook
            quantized_bytes=math.ceil(entries * (q.bits + s["gap_bits"]) / 8) + s["codebook_bytes"],
            huffman_bytes=s["record_bytes"],
            index_bits_per_weight=round(s["index_stream_bits"] / max(1, kept), 2),
            gap_bits_per_weight=round(s["gap_stream_bits"] / max(1, kept), 2)))
    dense = [dict(tensor=n, elements=state[n].numel(), encoding=stats[n]["encoding"], bytes=stats[n]["record_bytes"])
             for n in state if n not in quantized]
    params = sum(t.numel() for n, t in state.items() if t.is_floating_point())
    fp32 = params * 4
    return dict(model=model_name, layers=layers, dense=dense, totals=dict(
        params=params, fp32_bytes=fp32, file_bytes=file_bytes, ratio=round(fp32 / file_bytes, 2),
        weights=sum(r["weights"] for r in layers), kept=sum(r["kept"] for r in layers),
        kept_pct=round(100.0 * sum(r["kept"] for r in layers) / max(1, sum(r["weights"] for r in layers)), 2),
        conv_fc_huffman_bytes=sum(r["huffman_bytes"] for r in layers), dense_bytes=sum(d["bytes"] for d in dense),
        top1_before=top1["before"], top1_pruned=top1["pruned"], top1_clustered=top1["clustered"],
        top1_quantized=top1["quantized"], top1_loss_points=round(100.0 * (top1["before"] - top1["quantized"]), 2)))


def report_markdown(report: dict[str, Any]) -> str:
    t = report["totals"]
    lines = [f"# Deep Compression of {report['model']}", "",
             "| layer | weights | kept % | bits | gap bits | fp32 B | pruned B | quantized B | Huffman B (file) | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in report["layers"]:
        lines.append(f"| {row['layer']} | {row['weights']:,} | {row['kept_pct']:.1f} | {row['bits']} | {row['gap_bits']} | "
                     f"{row['fp32_bytes']:,} | {row['pruned_bytes']:,} | {row['quantized_bytes']:,} | {row['huffman_bytes']:,} | "
                     f"{row['fp32_bytes'] / row['huffman_bytes']:.1f}x |")
    lines += [f"| biases, batch-norm, header | {sum(d['elements'] for d in report['dense']):,} | | | | | | | "
              f"{t['file_bytes'] - t['conv_fc_huffman_bytes']:,} | |",
              f"| **total** | {t['params']:,} | {t['kept_pct']:.1f} | | | {t['fp32_bytes']:,} | | | "
              f"**{t['file_bytes']:,}** | **{t['ratio']:.1f}x** |", "",
              "| test top-1 | |", "|---|---:|",
              f"| before | {t['top1_before']:.4f} |", f"| after pruning + retraining | {t['top1_pruned']:.4f} |",
              f"| after k-means (before centroid fine-tuning) | {t['top1_clustered']:.4f} |",
              f"| after quantization (= after Huffman, lossless) | {t['top1_quantized']:.4f} |",
              f"| loss | {t['top1_loss_points']:.2f} points |", "",
              f"File size on disk {t['file_bytes']:,} bytes vs {t['fp32_bytes']:,} bytes fp32: "
              f"**{t['ratio']:.1f}x**. Compressed in {report.get('seconds', 0)} s.", ""]
    return "\n".join(lines)

