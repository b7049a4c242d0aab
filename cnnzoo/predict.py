"""Evaluate and predict with a trained checkpoint (a run folder or a weights file)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnzoo.checkpoint import load_checkpoint
from cnnzoo.data import Normalize, decode_image, load_dataset, resize_to
from cnnzoo.train import evaluate


def load_any_checkpoint(checkpoint: str | Path, model_name: str | None = None,
                        model_kwargs: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """A run folder or weights file, an exported .onnx file (run through ONNX Runtime), or a
    Deep-Compression .cnnz file (rebuilt as a dense model). ``model_kwargs`` apply to weights files,
    whose model is built from its name (the other two hold their network whole)."""
    suffix = Path(checkpoint).suffix
    if model_kwargs and suffix in (".onnx", ".cnnz"):
        raise ValueError(f"{checkpoint}: a {suffix} file holds its network whole; model arguments do not apply")
    if suffix == ".onnx":
        from cnnzoo.export import load_onnx_checkpoint

        return load_onnx_checkpoint(checkpoint)
    if suffix == ".cnnz":
        from cnnzoo.compress import load_compressed_checkpoint

        return load_compressed_checkpoint(checkpoint)
    return load_checkpoint(checkpoint, model_name, model_kwargs)


def load_model(checkpoint: str | Path | None = None, model_name: str | None = None, *,
               pretrained: bool | str | Path | None = None,
               model_kwargs: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, metadata) from a checkpoint (``load_any_checkpoint``), or built from a
    registered name with ``create_model(model_name, pretrained=...)``. The metadata's ``classes``
    are the weights' class names (``pretrained_cfg["label_names"]``) where known, else indices."""
    if checkpoint is not None:
        return load_any_checkpoint(checkpoint, model_name, model_kwargs)
    if model_name is None:
        raise ValueError("say which network: --checkpoint RUN_DIR|FILE, or --model NAME [--pretrained]")
    from cnnzoo.checkpoint import model_meta
    from cnnzoo.registry import create_model

    model = create_model(model_name, pretrained=pretrained, **(model_kwargs or {})).eval()
    cfg = model.pretrained_cfg
    classes = list(cfg.get("label_names") or [str(i) for i in range(cfg["num_classes"])])
    return model, model_meta(model, classes=classes)


def evaluate_checkpoint(checkpoint: str | Path, dataset: str | None = None, *, data_dir: str | None = None,
                        model_name: str | None = None, model_kwargs: dict[str, Any] | None = None,
                        batch_size: int = 512, tta_flip: bool = False) -> dict[str, Any]:
    """Top-1 / top-5 / loss of a checkpoint on the test split of ``dataset`` (default: its own);
    ``tta_flip`` averages each image's logits with its mirror image's."""
    model, meta = load_any_checkpoint(checkpoint, model_name, model_kwargs)
    dataset = dataset or meta.get("dataset")
    if dataset is None:
        raise ValueError(f"{checkpoint}: the checkpoint does not say which dataset it was trained on; pass --dataset")
    cfg = model.pretrained_cfg
    ds = load_dataset(dataset, "test", data_dir=data_dir or meta.get("data_dir"), input_size=cfg["input_size"],
                      num_classes=cfg["num_classes"], classes=meta["classes"] if dataset == "imagefolder" else None)
    if ds.classes != meta["classes"] and set(meta["classes"]) <= set(ds.classes):  # trained with --classes
        ds = ds.select_classes(meta["classes"])
    if len(ds.classes) != cfg["num_classes"]:
        raise ValueError(f"{dataset} has {len(ds.classes)} classes, the checkpoint's model {cfg['num_classes']}")
    ds.images = resize_to(ds.images, cfg["input_size"][1:])
    res = evaluate(model, ds, Normalize(cfg["mean"], cfg["std"]), batch_size, tta_flip=tta_flip)
    return dict(model=cfg["architecture"], checkpoint=str(checkpoint), dataset=dataset, images=len(ds), **res)


@torch.inference_mode()
def predict_files(checkpoint: str | Path, images: list[str | Path], *, topk: int = 5,
                  model_name: str | None = None, model_kwargs: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Top-k (class name, probability) for each image file, preprocessed as the model was trained:
    converted to its channels, fitted to the training images' size, then to the model's input."""
    model, meta = load_any_checkpoint(checkpoint, model_name, model_kwargs)
    cfg = model.pretrained_cfg
    c, h, w = cfg["input_size"]
    data_hw = tuple(meta.get("data_size", (c, h, w))[1:])
    normalize = Normalize(cfg["mean"], cfg["std"])
    k = min(topk, cfg["num_classes"])
    results = []
    for path in images:
        x = resize_to(resize_to(decode_image(path, c, fit_within=(h, w)), data_hw), (h, w))
        probs = model(normalize(x.unsqueeze(0))).softmax(dim=1)[0]
        top = probs.topk(k)
        results.append(dict(image=str(path), top=[dict(class_index=i, **{"class": meta["classes"][i]}, prob=round(p, 6))
                                                  for p, i in zip(top.values.tolist(), top.indices.tolist())]))
    return results
