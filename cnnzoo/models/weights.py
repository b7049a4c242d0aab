"""Weight files: reading them without unpickling code, and fitting them to a model.

``read_state_dict`` reads a .safetensors file, or a .pth/.pt file with
``torch.load(weights_only=True)``. ``convert_state_dict`` detects the key layout (cnnzoo's own, or
torchvision's or timm's through each model's ``KEY_MAPS``) and renames the keys to the model's.
``load_pretrained`` puts it together: the first convolution is adapted to the model's input channels
(``adapt_first_conv``), a classifier of another size is left freshly initialised, and any other
mismatch is an error that names the keys. Nothing here knows a model family or the registry.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch
from torch import nn


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file without unpickling arbitrary objects.

    .safetensors files are read with safetensors; anything else goes through
    ``torch.load(weights_only=True)``, which refuses pickles that would run code.
    Wrapped checkpoints (``{"state_dict": ...}``, ``{"model": ...}``) are unwrapped.
    """
    path = Path(path)
    if path.is_dir():
        for candidate in ("best.safetensors", "last.safetensors", "model.safetensors"):
            if (path / candidate).is_file():
                path = path / candidate
                break
        else:
            raise FileNotFoundError(f"{path} is a folder without best/last/model.safetensors")
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ValueError(f"{path}: not a readable safetensors file ({exc})") from exc
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError...
        raise ValueError(
            f"{path}: refused or unreadable as a weights-only torch file ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). cnnzoo never unpickles code."
        ) from exc
    for wrapper in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a dict of tensors (a state_dict), got {type(obj).__name__}")
    # DataParallel / DistributedDataParallel prefixes.
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _apply_key_map(state: dict[str, torch.Tensor], rules: list[tuple[str, str]]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for pattern, repl in rules:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def convert_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[str, dict[str, torch.Tensor]]:
    """Detect the key layout of ``state`` and rename its keys to ``model``'s.

    Each model class lists the layouts it can read in ``KEY_MAPS`` ({layout: [(regex, repl)]});
    cnnzoo's own layout is the identity. The layout whose renamed keys match the model's best wins.
    """
    target = set(model.state_dict().keys())
    layouts: dict[str, list[tuple[str, str]]] = {"cnnzoo": []}
    layouts.update(getattr(model, "KEY_MAPS", {}))
    best: tuple[int, str, dict[str, torch.Tensor]] | None = None
    for layout, rules in layouts.items():
        renamed = _apply_key_map(state, rules)
        mismatch = len(target ^ set(renamed))
        if best is None or mismatch < best[0]:
            best = (mismatch, layout, renamed)
        if mismatch == 0:
            break
    assert best is not None
    return best[1], best[2]


def adapt_first_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a first-layer filter bank of shape (out, c, kh, kw) to ``in_chans`` input channels.

    One channel: the sum over the file's channels (a grey image seen as R=G=B gives the same
    response). N channels: the file's channels repeated and scaled by c/N, so an input that repeats
    the original channels gives the original response.
    """
    file_chans = weight.shape[1]
    if in_chans == file_chans:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_chans // file_chans)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (file_chans / in_chans)


def load_pretrained(model: nn.Module, path: str | Path, *, strict_head: bool = False,
                    state: dict[str, torch.Tensor] | None = None) -> str:
    """Load a weights file into ``model``; returns the detected layout.

    A classifier of another size is left freshly initialised (with a warning), unless
    ``strict_head``; a first convolution with another channel count is adapted.
    Any other mismatch raises a ValueError that names the keys. ``state``: the file's state dict,
    already read (``path`` then only names it in messages).
    """
    state = read_state_dict(path) if state is None else {k.removeprefix("module."): v for k, v in state.items()}
    layout, state = convert_state_dict(model, state)
    own = model.state_dict()
    first = f"{model.first_conv}.weight"
    if first in state and first in own and own[first].dim() == 4 and state[first].shape[1] != own[first].shape[1]:
        state[first] = adapt_first_conv(state[first], own[first].shape[1])

    # Auxiliary classifiers (GoogLeNet, Inception v3) exist only when the model is built with them:
    # a file's aux weights are skipped for a model without, and follow the main head otherwise.
    aux_prefixes = tuple(f"{name}." for name in getattr(model, "aux_heads", ()))
    if aux_prefixes:
        state = {k: v for k, v in state.items() if k in own or not k.startswith(aux_prefixes)}
    head_prefix = f"{model.classifier_name}."
    if not any(k.startswith(head_prefix) for k in own):  # built with num_classes=0: no classifier to fill
        state = {k: v for k, v in state.items() if not k.startswith(head_prefix)}
    fresh = _drop_resized_heads(model, own, state, path, aux_prefixes, strict_head)
    _check_fit(model, own, state, fresh, path, layout)
    model.load_state_dict(state, strict=not fresh)
    return layout


def _drop_resized_heads(model: nn.Module, own: dict[str, torch.Tensor], state: dict[str, torch.Tensor],
                        path: str | Path, aux_prefixes: tuple[str, ...], strict_head: bool) -> list[str]:
    """Remove from ``state`` the classifier (and auxiliary classifiers) of another size than the
    model's; returns the model's keys left freshly initialised (none when the sizes agree)."""
    head_keys = [k for k in own if k.startswith(f"{model.classifier_name}.")]
    head_mismatch = [k for k in head_keys if k in state and state[k].shape != own[k].shape]
    if not head_mismatch:
        return []
    k = head_mismatch[0]
    if strict_head:
        raise ValueError(
            f"{path}: classifier {k} has shape {tuple(state[k].shape)}, the model expects "
            f"{tuple(own[k].shape)} (trained for another number of classes?)"
        )
    warnings.warn(
        f"{path}: classifier has {state[k].shape[0]} outputs, the model {own[k].shape[0]}; the classifier "
        f"'{model.classifier_name}' is left freshly initialised",
        stacklevel=3,
    )
    head_keys += [k for k in own if k.startswith(aux_prefixes) and k in state and state[k].shape != own[k].shape]
    for k in head_keys:
        state.pop(k, None)
    return head_keys


def _check_fit(model: nn.Module, own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], fresh: list[str],
               path: str | Path, layout: str) -> None:
    missing = sorted(set(own) - set(state) - set(fresh))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if not (missing or unexpected or wrong_shape):
        return
    arch = getattr(model, "pretrained_cfg", {}).get("architecture", type(model).__name__)
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:4])})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:4])})")
    if wrong_shape:
        k = wrong_shape[0]
        parts.append(
            f"{len(wrong_shape)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} vs "
            f"model {tuple(own[k].shape)})"
        )
    raise ValueError(f"{path} does not fit model {arch} (closest key layout: {layout}): " + "; ".join(parts))
