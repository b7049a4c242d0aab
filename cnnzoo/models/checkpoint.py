"""Weights files that rebuild their model: safetensors with the model's name, arguments, classes
and preprocessing in the header metadata (``save_weights``), and ``load_checkpoint``, which
rebuilds the model from a run folder, such a file or a Hugging Face Hub repository.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from cnnzoo.models import hf_hub
from cnnzoo.models.factory import create_model
from cnnzoo.models.registry import get_pretrained_cfg
from cnnzoo.models.weights import load_pretrained
from cnnzoo.utils.io import atomic_write

WEIGHTS_META_KEY = "cnnzoo"


def model_meta(model: nn.Module, **extra: Any) -> dict[str, Any]:
    """What it takes to rebuild ``model`` from its weights file alone (and to preprocess inputs)."""
    cfg = model.pretrained_cfg
    meta = dict(model=cfg["architecture"], num_classes=cfg["num_classes"], in_chans=cfg["in_chans"],
                kwargs=cfg.get("kwargs", {}), input_size=list(cfg["input_size"]),
                mean=list(cfg["mean"]), std=list(cfg["std"]))
    meta.update(extra)
    return meta


def save_weights(model: nn.Module, path: str | Path, meta: dict[str, Any]) -> None:
    """Weights as safetensors, with the model's rebuild information in the header metadata."""
    # Shared or non-contiguous tensors cannot be saved by safetensors; clone them to plain ones.
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={WEIGHTS_META_KEY: json.dumps(meta)}))


def read_weights_meta(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = (f.metadata() or {}).get(WEIGHTS_META_KEY)
    if not meta:
        raise ValueError(f"{path}: no cnnzoo metadata; pass --model NAME to say which network it holds")
    return json.loads(meta)


def resolve_weights(path: str | Path) -> Path:
    """A run folder (best, else last weights) or a weights file."""
    path = Path(path)
    if path.is_dir():
        for name in ("best.safetensors", "last.safetensors"):
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: no best.safetensors or last.safetensors in this folder (not a cnnzoo run?)")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | Path, model_name: str | None = None,
                    model_kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a run folder, weights file or ``hf-hub:OWNER/NAME`` repository; returns
    (model in eval mode, metadata).

    ``model_kwargs`` go to the model's constructor on top of those the metadata records (e.g. for
    weights files without metadata, with ``model_name``). Weights of another architecture than the
    metadata (or ``model_name``) says raise a ValueError naming the mismatched keys.
    """
    if hf_hub.is_hub_name(str(path)):
        return load_hub_checkpoint(str(path), model_name, model_kwargs)
    weights = resolve_weights(path)
    if weights.suffix == ".safetensors":
        try:
            meta = read_weights_meta(weights)
        except ValueError:
            if model_name is None:
                raise
            meta = {}
    else:
        meta = {}
    if model_name is not None:
        meta["model"] = model_name
    if "model" not in meta:
        raise ValueError(f"{weights}: cannot tell which model it holds; pass --model NAME")
    if model_kwargs:
        meta["kwargs"] = {**meta.get("kwargs", {}), **model_kwargs}
    model = create_model(meta["model"], num_classes=meta.get("num_classes", 1000), in_chans=meta.get("in_chans", 3),
                         **meta.get("kwargs", {}))
    load_pretrained(model, weights, strict_head=True)
    model.set_pretrained_cfg(**{k: tuple(meta[k]) for k in ("mean", "std", "input_size") if k in meta})
    meta.setdefault("classes", [str(i) for i in range(model.pretrained_cfg["num_classes"])])
    return model.eval(), meta


def load_hub_checkpoint(name: str, model_name: str | None = None,
                        model_kwargs: dict[str, Any] | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A hub repository's model (``create_model("hf-hub:...")``) in eval mode, and the metadata a
    weights file would carry: the run's dataset, classes and image size where cnnzoo pushed it."""
    repo = hf_hub.open_repo(name)
    if model_name is not None and get_pretrained_cfg(model_name).architecture != repo.architecture:
        raise ValueError(f"{name} holds a {repo.architecture}, not a {model_name}; leave out --model")
    model = create_model(name, **(model_kwargs or {}))
    cfg = model.pretrained_cfg
    classes = cfg.get("label_names") or [str(i) for i in range(cfg["num_classes"])]
    meta = {**repo.run_meta(), **model_meta(model, classes=list(classes)), "hf_hub_id": repo.repo_id}
    return model.eval(), meta
