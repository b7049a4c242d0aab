"""Run folders and checkpoints: atomic writes, safetensors weights, resumable train state.

A run folder holds
    config.json          every setting of the run
    metrics.csv          one row per epoch
    last.safetensors     weights at the latest checkpoint  (metadata: how to rebuild the model)
    best.safetensors     weights of the best test top-1 so far
    train_state.pt       what --resume needs, in one file: weights, optimizer, scheduler, the RNG
                         states of every rank, epoch and step within it, the metrics rows so far
                         (read back with weights_only=True)
    summary.json         written when the run ends
Every file is written to a temporary name in the same folder, flushed, then renamed over the old
one: a kill mid-write leaves the previous good file in place.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

WEIGHTS_META_KEY = "cnnzoo"


def atomic_write(path: str | Path, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)``, fsync, then rename onto ``path`` (atomic on POSIX)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); give it the mode an ordinary new file would get.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    # The rename itself lives in the folder: sync it too, or a power cut can undo it.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # platforms that cannot open folders (Windows)
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files a killed ``atomic_write`` left behind; returns them."""
    stale = sorted(Path(folder).glob(".*.tmp"))
    for f in stale:
        f.unlink(missing_ok=True)
    return stale


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


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


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_train_state(path: str | Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


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
    """Rebuild a model from a run folder or weights file; returns (model in eval mode, metadata).

    ``model_kwargs`` go to the model's constructor on top of those the metadata records (e.g. for
    weights files without metadata, with ``model_name``). Weights of another architecture than the
    metadata (or ``model_name``) says raise a ValueError naming the mismatched keys.
    """
    from cnnzoo.registry import create_model
    from cnnzoo.weights import load_pretrained

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
