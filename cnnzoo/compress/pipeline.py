"""Deep Compression end to end (Han, Mao, Dally 2016): prune -> retrain -> share weights by k-means
-> fine-tune the shared values -> Huffman-code, written as one .cnnz file, with a report laid out
like the paper's Tables 2-5 (per layer: weights, % kept, bits, bytes after each stage; in total:
fp32 size, file size on disk, ratio, and test top-1 after each lossy stage).
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.checkpoint import load_checkpoint, write_json, write_text
from cnnzoo.compress import fileformat as ff
from cnnzoo.compress.prune import (apply_masks, check_spec_keys, layer_kind, lookup, magnitude_mask, mask_gradients,
                                   parse_layer_spec, prunable_weights)
from cnnzoo.compress.quantize import INITS, QuantizedWeight, quantize_weight
from cnnzoo.data import ImageDataset, Normalize, iterate_batches, load_dataset, resize_to
from cnnzoo.train import evaluate

# Per-model defaults, tuned on Fashion-MNIST runs of `cnnzoo train` (see BENCHMARKS.md). Small
# networks have little redundancy, so their big fully connected layers carry most of the pruning;
# the first conv layer, with few weights that every feature depends on, is barely pruned.
MODEL_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    # LeNet-5 keeps more of c3 (its only wide convolution) than c5/f6, and retrains at a higher rate
    # against the dense model's outputs: 0.71 points lost at 41x on 1 thread, 0.99 on 2 (the
    # run-to-run noise is about 0.3), against 1.16 at 42x for c3=0.7, c5=0.95, f6=0.92, lr 1e-3,
    # no distillation, on the same run (BENCHMARKS.md).
    "lenet5": dict(sparsity={"c1": 0.2, "c3": 0.5, "c5": 0.955, "f6": 0.9, "output": 0.6},
                   bits={"c1": 4, "c3": 4, "c5": 3, "f6": 4, "output": 4},
                   schedule={"quant_epochs": 12.0, "centroid_lr": 3e-4, "lr": 3e-3, "distill": True}),
    # AlexNet (CIFAR layout) holds 42% of its weights in convolutions, unlike the paper's 6%: they
    # are pruned to 10% (conv2, the first wide one, to 30%) at 5 bits. 47.4x, 0.06 points lost.
    "alexnet_cifar": dict(sparsity={"conv1.conv": 0.2, "conv2.conv": 0.7, "conv": 0.9, "fc6": 0.96, "fc7": 0.95,
                                    "fc8": 0.7},
                          bits={"conv": 5, "fc": 4},
                          schedule={"final_epochs": 3.0, "quant_epochs": 1.0, "lr": 3e-4, "distill": True}),
    "lenet_300_100": dict(sparsity={"fc1": 0.92, "fc2": 0.88, "fc3": 0.5}, bits={"fc": 4}),
    # The paper's "LeNet-5" (Caffe's, 431k weights): the paper's kept fractions for conv1 (66%) and fc2
    # (20%), conv2 at 20% instead of 12% and fc1 at 5% instead of 8%, retrained at LeNet-5's rate with
    # distillation: 52.6x, 0.45 points lost on average over five seeds, against 0.54 with conv2 at 12%
    # (55.8x) and 1.20 at lr 1e-3 without distillation (BENCHMARKS.md).
    "lenet5_caffe": dict(sparsity={"conv1": 0.34, "conv2": 0.8, "fc1": 0.95, "fc2": 0.8}, bits={"conv": 6, "fc": 4},
                         schedule={"lr": 3e-3, "distill": True}),
}
GENERIC_DEFAULTS = dict(sparsity={"conv": 0.65, "fc": 0.9}, bits={"conv": 8, "fc": 5})  # the paper's AlexNet bits
SCHEDULE_DEFAULTS: dict[str, Any] = {"final_epochs": 8.0, "quant_epochs": 2.0, "lr": 1e-3, "centroid_lr": 1e-4,
                                     "weight_decay": 0.0, "distill": False}


def _load_data(meta: dict[str, Any], model: nn.Module, dataset: str | None, data_dir: str | None,
               train_subset: int | None, seed: int) -> tuple[ImageDataset, ImageDataset, Normalize]:
    """Train and test splits, fitted to the model's input as training fitted them."""
    dataset = dataset or meta.get("dataset")
    if dataset is None:
        raise ValueError("the checkpoint does not say which dataset it was trained on; pass --dataset")
    cfg = model.default_cfg
    common = dict(data_dir=data_dir or meta.get("data_dir"), input_size=tuple(cfg["input_size"]),
                  num_classes=cfg["num_classes"], seed=meta.get("seed", 0))
    classes = meta.get("classes") if dataset == "imagefolder" else None
    train_ds = load_dataset(dataset, "train", classes=classes, **common)
    test_ds = load_dataset(dataset, "test", classes=classes or train_ds.classes, **common)
    if len(train_ds.classes) != cfg["num_classes"]:
        raise ValueError(f"{dataset} has {len(train_ds.classes)} classes, the checkpoint's model {cfg['num_classes']}")
    if train_subset:
        train_ds = train_ds.subset(train_subset, seed)
    for ds in (train_ds, test_ds):
        ds.images = resize_to(ds.images, tuple(cfg["input_size"][1:]))
    return train_ds, test_ds, Normalize(cfg["mean"], cfg["std"])


def finetune(model: nn.Module, train_ds: ImageDataset, normalize: Normalize, *, epochs: float, lr: float,
             batch_size: int = 128, seed: int = 0, masks: dict[str, torch.Tensor] | None = None,
             quantized: dict[str, QuantizedWeight] | None = None, centroid_lr: float | None = None,
             weight_decay: float = 0.0, teacher: nn.Module | torch.Tensor | None = None, temperature: float = 4.0,
             crop_padding: int = 0, flip: bool = False, channels_last: bool = False, progress: bool = False) -> None:
    """Retrain with the compression constraints held: ``masks`` keep pruned weights at zero (their
    gradients zeroed, the weights re-zeroed after each step); ``quantized`` layers train only their
    centroids, each with the summed gradient of its weights, and are rebuilt from them after each
    step. Adam with a cosine-decayed learning rate; ``epochs`` may be fractional. ``weight_decay``
    (decoupled, AdamW) applies to the free conv/linear weights, never to biases or centroids: the
    paper's L2 retraining, which keeps pushing small weights towards zero, so the next pruning step
    removes less that matters (Han et al. 2015, Sec. 3.1; off by default: on LeNet-5, 0.05 lost more
    than none, BENCHMARKS.md). With ``teacher``
    (the uncompressed model) the loss adds the KL divergence to its softened outputs at
    ``temperature`` (Hinton et al. 2015), which tells the smaller network more per image than the
    label alone; ``teacher`` may also be its logits for every image of ``train_ds``
    (``teacher_logits``), which spares a forward pass per step when the images are not augmented.
    ``crop_padding`` and ``flip`` augment the batches as the trainer does. ``channels_last`` runs
    the retraining in channels-last layout: the CPU's convolutions are faster there (lenet5_caffe:
    20 ms a step against 28 at batch 128 on 2 threads), but they round differently, so the
    retraining takes another path (off by default, so that the tuned defaults reproduce;
    BENCHMARKS.md). The model is handed back in the default layout."""
    if isinstance(teacher, torch.Tensor) and (crop_padding or flip):
        raise ValueError("precomputed teacher logits hold for unaugmented images only; pass the teacher model")
    if epochs <= 0:
        return
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)
    params = dict(model.named_parameters())
    quantized = quantized or {}
    free = [p for n, p in params.items() if n not in quantized]
    groups: list[dict[str, Any]] = [{"params": [p for p in free if p.ndim > 1], "lr": lr, "weight_decay": weight_decay},
                                    {"params": [p for p in free if p.ndim <= 1], "lr": lr, "weight_decay": 0.0}]
    if quantized:
        groups.append({"params": [q.centroids for q in quantized.values()], "lr": centroid_lr or lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups)
    base_lrs = [g["lr"] for g in groups]
    steps_per_epoch = math.ceil(len(train_ds) / batch_size)
    total = max(1, int(round(epochs * steps_per_epoch)))
    step = 0
    model.train()
    epoch = 0
    while step < total:
        g = torch.Generator().manual_seed(seed * 100003 + 7919 + epoch)
        order = torch.randperm(len(train_ds), generator=g)
        batches = iterate_batches(train_ds, batch_size, generator=g, indices=order, crop_padding=crop_padding, flip=flip)
        for start, (x, y) in zip(range(0, len(order), batch_size), batches):
            if step >= total:
                break
            for group, base in zip(opt.param_groups, base_lrs):
                group["lr"] = base * 0.5 * (1 + math.cos(math.pi * step / total))
            x = normalize(x).contiguous(memory_format=layout)
            logits = _main_logits(model(x))
            loss = F.cross_entropy(logits, y)
            if teacher is not None:
                with torch.no_grad():
                    target = (teacher[order[start: start + batch_size]] if isinstance(teacher, torch.Tensor)
                              else teacher(x))
                loss = loss + temperature ** 2 * F.kl_div(F.log_softmax(logits / temperature, dim=1),
                                                          F.log_softmax(target / temperature, dim=1),
                                                          reduction="batchmean", log_target=True)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fine-tuning loss became {loss.item()} at step {step}; try a lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if masks:
                mask_gradients(model, masks)
            for name, q in quantized.items():
                q.accumulate_grad(params[name].grad)
                params[name].grad = None
            opt.step()
            with torch.no_grad():
                if masks:
                    apply_masks(model, masks)
                for name, q in quantized.items():
                    params[name].copy_(q.dense())
            step += 1
        epoch += 1
        if progress:
            print(f"  fine-tune epoch {epoch}: last batch loss {loss.item():.4f}", flush=True)
    model.to(memory_format=torch.contiguous_format)
    model.eval()


@torch.no_grad()
def teacher_logits(teacher: nn.Module, ds: ImageDataset, normalize: Normalize, batch_size: int = 1024) -> torch.Tensor:
    """The (uncompressed) model's logits for every image of ``ds``, in order: computed once, they
    stand in for its forward pass at every retraining step."""
    teacher.eval()
    return torch.cat([_main_logits(teacher(normalize(x))) for x, _ in iterate_batches(ds, batch_size)])


def _main_logits(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The main head's logits: Inception models in training mode also return their auxiliary heads'."""
    return out[0] if isinstance(out, tuple) else out


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


def compress(checkpoint: str | Path, out: str | Path, *, dataset: str | None = None, data_dir: str | None = None,
             prune_quality: float | None = None, sparsity: str | dict | None = None, bits: str | dict | None = None,
             prune_iters: int = 4, prune_epochs: float = 3.0, final_epochs: float | None = None,
             quant_epochs: float | None = None, lr: float | None = None, centroid_lr: float | None = None,
             weight_decay: float | None = None, batch_size: int = 128, init: str = "linear", dense_dtype: str = "fp16",
             train_subset: int | None = None, distill: bool | None = None, crop_padding: int = 0, flip: bool = False,
             channels_last: bool = False, seed: int = 0, model_kwargs: dict[str, Any] | None = None,
             threads: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Deep-Compress the model of a run folder into ``out`` (.cnnz); returns the report, also written
    next to ``out`` as ``<stem>.report.json`` and ``<stem>.report.md``.

    ``prune_quality`` prunes |w| < quality x std(w) in every layer; ``sparsity`` ("c5=0.95,fc=0.9")
    prunes explicit fractions (keys: layer names, ``conv``, ``fc``, ``*``); without either, the
    model's tuned defaults apply. Pruning is reached in ``prune_iters`` steps, each followed by
    ``prune_epochs`` of retraining (``final_epochs`` after the last step, where the network has lost
    the most and needs the most recovery). ``bits`` sets the codebook size 2^bits per layer.
    ``distill``, ``crop_padding`` and ``flip`` shape every retraining (see ``finetune``).
    ``model_kwargs`` go to the model's constructor on top of those its checkpoint records (e.g. another
    dropout rate for the retraining); ``threads`` sets torch's thread count.
    """
    t0 = time.perf_counter()
    if init not in INITS:
        raise ValueError(f"--init must be one of {INITS}, got {init!r}")
    if prune_iters < 1:
        raise ValueError(f"--prune-iters must be >= 1, got {prune_iters}")
    if crop_padding < 0:
        raise ValueError(f"--crop-padding must be >= 0, got {crop_padding}")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, meta = load_checkpoint(checkpoint, model_kwargs=model_kwargs)
    model_name = meta["model"]
    schedule = {**SCHEDULE_DEFAULTS, **MODEL_DEFAULTS.get(model_name, {}).get("schedule", {})}
    final_epochs = schedule["final_epochs"] if final_epochs is None else final_epochs
    quant_epochs = schedule["quant_epochs"] if quant_epochs is None else quant_epochs
    centroid_lr = schedule["centroid_lr"] if centroid_lr is None else centroid_lr
    lr = schedule["lr"] if lr is None else lr
    distill = schedule["distill"] if distill is None else distill
    weight_decay = schedule["weight_decay"] if weight_decay is None else weight_decay
    weights = prunable_weights(model)
    sp, bit_spec = _spec_with_defaults(model_name, weights, prune_quality, sparsity, bits)
    train_ds, test_ds, normalize = _load_data(meta, model, dataset, data_dir, train_subset, seed)
    log = print if progress else (lambda *a, **k: None)

    top1_before = evaluate(model, test_ds, normalize)["top1"]
    # what every retraining shares: the uncompressed network as the teacher when distilling (its
    # logits, computed once, when the images are not augmented), the weight decay, the augmentation
    teacher = None
    if distill:
        teacher = (copy.deepcopy(model).eval() if crop_padding or flip
                   else teacher_logits(model, train_ds, normalize))
    retrain = dict(teacher=teacher, weight_decay=weight_decay, crop_padding=crop_padding, flip=flip,
                   channels_last=channels_last, progress=False)
    log(f"{model_name}: test top-1 {top1_before:.4f} before compression")

    # ---- 1. prune, iteratively, retraining with the masks fixed
    std0 = {n: float(w.detach().std()) for n, w in weights.items()}
    masks: dict[str, torch.Tensor] = {}
    for it in range(1, prune_iters + 1):
        frac = it / prune_iters
        for n, w in weights.items():
            s = lookup(sp, n, w, None)
            if prune_quality is not None and s is None:
                masks[n] = magnitude_mask(w, quality=prune_quality * frac, previous=masks.get(n), std=std0[n])
            else:
                # the kept fraction shrinks geometrically (1, k^(1/n), k^(2/n), ... k): each step
                # removes the same share of what is left, so the last step is no bigger than the first
                masks[n] = magnitude_mask(w, sparsity=1.0 - (1.0 - (s or 0.0)) ** frac, previous=masks.get(n))
        apply_masks(model, masks)
        epochs = final_epochs if it == prune_iters else prune_epochs
        finetune(model, train_ds, normalize, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed + it,
                 masks=masks, **retrain)
        kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        log(f"prune step {it}/{prune_iters}: {kept:.1%} of conv/fc weights kept, "
            f"test top-1 {evaluate(model, test_ds, normalize)['top1']:.4f}")
    top1_pruned = evaluate(model, test_ds, normalize)["top1"]

    # ---- 2. share weights by k-means, fine-tune the centroids
    g = torch.Generator().manual_seed(seed)
    quantized = {n: quantize_weight(n, w, masks[n], int(lookup(bit_spec, n, w, 8)), init=init, generator=g)
                 for n, w in weights.items()}
    with torch.no_grad():
        for n, q in quantized.items():
            weights[n].copy_(q.dense())
    top1_clustered = evaluate(model, test_ds, normalize)["top1"]
    finetune(model, train_ds, normalize, epochs=quant_epochs, lr=lr * 0.1, batch_size=batch_size, seed=seed + 1000,
             quantized=quantized, centroid_lr=centroid_lr, **retrain)

    # ---- 3. round what the file stores to its stored precision, so memory == file exactly
    codebook_dtype = 1 if dense_dtype == "fp16" else 0
    dense: dict[str, torch.Tensor] = {}
    encodings: dict[str, int] = {}
    state = model.state_dict()
    with torch.no_grad():
        for n, q in quantized.items():
            q.centroids = ff.round_codebook(q.centroids, codebook_dtype)
            weights[n].copy_(q.dense())
        for n, t in state.items():
            if n in quantized:
                continue
            encodings[n] = ff.dense_encoding(t, dense_dtype)
            t.copy_(ff.round_to_encoding(t, encodings[n]))
            dense[n] = t
    top1_quant = evaluate(model, test_ds, normalize)["top1"]
    log(f"quantized: test top-1 {top1_quant:.4f} (before centroid fine-tuning {top1_clustered:.4f})")

    file_meta = {k: meta[k] for k in ("model", "num_classes", "in_chans", "kwargs", "input_size", "mean", "std",
                                      "classes", "dataset", "data_dir", "data_size") if k in meta}
    order = [n for n in state if n not in quantized]
    blob, stats = ff.encode_file(file_meta, {n: dense[n] for n in order}, encodings, quantized, codebook_dtype)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ff.write_cnnz(out, blob)

    # the file must rebuild the very model in memory: same logits, bit for bit
    x, _ = next(iterate_batches(test_ds, 256))
    rebuilt = load_compressed(out)
    with torch.no_grad():
        exact = bool(torch.equal(model.eval()(normalize(x)), rebuilt(normalize(x))))
    if not exact:
        raise RuntimeError(f"{out}: the rebuilt model's logits differ from the compressed model's (a bug)")

    report = _report(model_name, state, quantized, stats, out.stat().st_size, dict(
        before=top1_before, pruned=top1_pruned, clustered=top1_clustered, quantized=top1_quant))
    report.update(checkpoint=str(checkpoint), out=str(out), dataset=meta.get("dataset") if dataset is None else dataset,
                  settings=dict(prune_quality=prune_quality, sparsity=None if prune_quality is not None and not sparsity else sp,
                                bits=bit_spec, prune_iters=prune_iters, prune_epochs=prune_epochs, final_epochs=final_epochs,
                                quant_epochs=quant_epochs, lr=lr, centroid_lr=centroid_lr,
                                weight_decay=weight_decay, init=init,
                                dense_dtype=dense_dtype, train_images=len(train_ds), distill=distill,
                                crop_padding=crop_padding, flip=flip, channels_last=channels_last, seed=seed),
                  roundtrip_exact=exact, seconds=round(time.perf_counter() - t0, 1))
    write_json(out.with_suffix(".report.json"), report)
    write_text(out.with_suffix(".report.md"), report_markdown(report))
    return report


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
        weights=sum(l["weights"] for l in layers), kept=sum(l["kept"] for l in layers),
        kept_pct=round(100.0 * sum(l["kept"] for l in layers) / max(1, sum(l["weights"] for l in layers)), 2),
        conv_fc_huffman_bytes=sum(l["huffman_bytes"] for l in layers), dense_bytes=sum(d["bytes"] for d in dense),
        top1_before=top1["before"], top1_pruned=top1["pruned"], top1_clustered=top1["clustered"],
        top1_quantized=top1["quantized"], top1_loss_points=round(100.0 * (top1["before"] - top1["quantized"]), 2)))


def report_markdown(report: dict[str, Any]) -> str:
    t = report["totals"]
    lines = [f"# Deep Compression of {report['model']}", "",
             "| layer | weights | kept % | bits | gap bits | fp32 B | pruned B | quantized B | Huffman B (file) | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for l in report["layers"]:
        lines.append(f"| {l['layer']} | {l['weights']:,} | {l['kept_pct']:.1f} | {l['bits']} | {l['gap_bits']} | "
                     f"{l['fp32_bytes']:,} | {l['pruned_bytes']:,} | {l['quantized_bytes']:,} | {l['huffman_bytes']:,} | "
                     f"{l['fp32_bytes'] / l['huffman_bytes']:.1f}x |")
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


# --------------------------------------------------------------------------------------------------
# Loading


def load_compressed(path: str | Path) -> nn.Module:
    """A dense model rebuilt from a .cnnz file, in eval mode; its logits equal those of the quantized
    model that was written, exactly."""
    meta, tensors = ff.read_cnnz(path)
    return ff.build_model(meta, tensors, str(path)).eval()


def load_compressed_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, metadata): the pair ``checkpoint.load_checkpoint`` returns, for .cnnz files."""
    meta, tensors = ff.read_cnnz(path)
    model = ff.build_model(meta, tensors, str(path)).eval()
    meta.setdefault("classes", [str(i) for i in range(model.default_cfg["num_classes"])])
    return model, meta
