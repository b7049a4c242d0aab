"""Evaluate and predict with a trained checkpoint (a run folder or a weights file), or a registered
model with published weights (preprocessed as the reference evaluates them: ``cnnzoo.data.transforms``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, BinaryIO

import torch

from cnnzoo.data.datasets import IMAGE_EXTENSIONS, Normalize, decode_image, resize_to
from cnnzoo.data.transforms import eval_transform
from cnnzoo.inference.checkpoint_data import checkpoint_split
from cnnzoo.inference.evaluate import evaluate
from cnnzoo.inference.load import load_model
from cnnzoo.models.hub import imagenet_wnids


def evaluate_checkpoint(checkpoint: str | Path | None, dataset: str | None = None, *, data_dir: str | None = None,
                        model_name: str | None = None, model_kwargs: dict[str, Any] | None = None,
                        batch_size: int = 512, tta_flip: bool = False, tta_shift: int = 0,
                        pretrained: bool | str | Path | None = None) -> dict[str, Any]:
    """Top-1 / top-5 / loss of a checkpoint (or of ``model_name`` with ``pretrained`` weights) on the
    test split of ``dataset`` (default: its own), prepared as the run prepared it
    (``checkpoint_split``); ``tta_flip`` averages each image's logits with its mirror image's,
    ``tta_shift`` with its moved copies (``evaluate.tta_views``). ImageNet weights on
    an image folder are scored image by image with the reference's preprocessing
    (``evaluate_imagenet_folder``)."""
    model, meta = load_model(checkpoint, model_name, pretrained=pretrained, model_kwargs=model_kwargs)
    source = str(checkpoint or model.pretrained_cfg.get("weights") or model_name)
    dataset = dataset or meta.get("dataset")
    if dataset is None:
        raise ValueError(f"{source}: the checkpoint does not say which dataset it was trained on; pass --dataset")
    cfg = model.pretrained_cfg
    if dataset == "imagefolder" and cfg.get("label_names") and checkpoint is None:
        if data_dir is None:
            raise ValueError("--dataset imagefolder needs --data-dir DIR (ImageNet's val folder: one folder per class)")
        if tta_shift:
            raise ValueError("--tta-shift applies to datasets held in memory, not to ImageNet weights scored on a "
                             "folder")
        res = evaluate_imagenet_folder(model, data_dir, batch_size=batch_size, tta_flip=tta_flip)
        return dict(model=cfg["architecture"], checkpoint=source, dataset=dataset, **res)
    ds, normalize = checkpoint_split(cfg, meta, "test", dataset=dataset, data_dir=data_dir)
    res = evaluate(model, ds, normalize, batch_size, tta_flip=tta_flip, tta_shift=tta_shift)
    return dict(model=cfg["architecture"], checkpoint=source, dataset=dataset, images=len(ds), **res)


def imagenet_folder_labels(folders: list[str], label_names: list[str]) -> dict[str, int]:
    """The label of each class folder of an ImageNet-style set: a WordNet id (``n01440764``, as
    ImageNet's own folders) or a class name of the weights' ``label_names`` (``tench``)."""
    by_wnid = {w: i for i, w in enumerate(imagenet_wnids())} if len(label_names) == 1000 else {}
    by_name: dict[str, list[int]] = {}
    for i, name in enumerate(label_names):
        by_name.setdefault(name.lower(), []).append(i)
    labels, unknown, ambiguous = {}, [], []
    for folder in folders:
        hits = [by_wnid[folder]] if folder in by_wnid else by_name.get(folder.lower(), [])
        if len(hits) == 1:
            labels[folder] = hits[0]
        else:
            (ambiguous if hits else unknown).append(folder)
    if unknown or ambiguous:
        parts = [f"{len(unknown)} folders name no class (e.g. {', '.join(unknown[:4])})"] if unknown else []
        if ambiguous:
            parts.append(f"class names {', '.join(ambiguous[:4])} belong to several classes: use WordNet-id folders")
        raise ValueError("image folder classes do not map to the weights' ImageNet classes: " + "; ".join(parts)
                         + " (folders must be WordNet ids such as n01440764, or class names such as 'tench')")
    return labels


def _folder_files(root: Path) -> tuple[list[Path], list[str]]:
    split = root / "val" if (root / "val").is_dir() else root
    folders = sorted(d.name for d in split.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise ValueError(f"{split}: no class folders")
    files = [p for f in folders for p in sorted((split / f).iterdir())
             if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise ValueError(f"{split}: no images (extensions {', '.join(IMAGE_EXTENSIONS)})")
    return files, folders


def prepare_image(path: str | Path | BinaryIO, cfg: dict[str, Any], meta: dict[str, Any]) -> torch.Tensor:
    """An image file (a path, or a binary file object such as an upload) as the model sees it, uint8
    (C, H, W) of its input size, before normalisation. A model trained by cnnzoo sees it as in
    training: converted to its channels, fitted to the training images' size (``meta["data_size"]``),
    then to the model's input. A model built from a name (published weights) sees the reference's
    evaluation preprocessing: resize to input / crop_pct, centre crop (``eval_transform``)."""
    c, h, w = cfg["input_size"]
    if "data_size" not in meta:
        return eval_transform(cfg).pixels(decode_image(path, c))
    return resize_to(resize_to(decode_image(path, c, fit_within=(h, w)), tuple(meta["data_size"][1:])), (h, w))


@torch.inference_mode()
def evaluate_imagenet_folder(model: torch.nn.Module, data_dir: str | Path, *, batch_size: int = 64,
                             tta_flip: bool = False) -> dict[str, Any]:
    """Top-1 / top-5 / loss of ImageNet weights on ``data_dir`` (or ``data_dir/val``), one folder per
    class (``imagenet_folder_labels``); each image decoded whole and preprocessed with the weights'
    ``eval_transform``, a batch at a time, so memory does not grow with the set."""
    cfg = model.pretrained_cfg
    files, folders = _folder_files(Path(data_dir))
    labels = imagenet_folder_labels(folders, cfg["label_names"])
    transform = eval_transform(cfg)
    correct1 = correct5 = 0
    loss_sum = 0.0
    for start in range(0, len(files), batch_size):
        chunk = files[start: start + batch_size]
        x = torch.stack([transform(decode_image(p, cfg["input_size"][0])) for p in chunk])
        y = torch.tensor([labels[p.parent.name] for p in chunk])
        logits = model(x)
        if tta_flip:
            logits = (logits + model(x.flip(3))) / 2
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(5, dim=1).indices
        correct1 += (top[:, 0] == y).sum().item()
        correct5 += (top == y[:, None]).any(dim=1).sum().item()
    n = len(files)
    return dict(images=n, top1=correct1 / n, top5=correct5 / n, loss=loss_sum / n)


@torch.inference_mode()
def predict_files(checkpoint: str | Path | None, images: list[str | Path], *, topk: int = 5,
                  model_name: str | None = None, model_kwargs: dict[str, Any] | None = None,
                  pretrained: bool | str | Path | None = None) -> list[dict[str, Any]]:
    """Top-k (class name, probability) for each image file, preprocessed by ``prepare_image``."""
    model, meta = load_model(checkpoint, model_name, pretrained=pretrained, model_kwargs=model_kwargs)
    cfg = model.pretrained_cfg
    normalize = Normalize(cfg["mean"], cfg["std"])
    k = min(topk, cfg["num_classes"])
    results = []
    for path in images:
        probs = model(normalize(prepare_image(path, cfg, meta).unsqueeze(0))).softmax(dim=1)[0]
        top = probs.topk(k)
        results.append(dict(image=str(path), top=[dict(class_index=i, **{"class": meta["classes"][i]}, prob=round(p, 6))
                                                  for p, i in zip(top.values.tolist(), top.indices.tolist())]))
    return results
