"""Magnitude pruning with fixed masks (Han et al. 2015 "Learning both weights and connections",
the first stage of Deep Compression).

A weight whose magnitude is under a layer's threshold is removed. The threshold is either
``quality x std(layer's weights)`` (the rule of the paper's Caffe code) or the magnitude that
removes an explicit fraction of the layer. The masks then stay fixed while the network retrains:
gradients of pruned weights are zeroed and the weights re-zeroed after every optimiser step (an
adaptive optimiser's momentum would otherwise move them off zero).
"""
from __future__ import annotations

import torch
from torch import nn


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """The weights Deep Compression prunes and quantizes: those of every conv and linear layer,
    keyed by their state-dict name (``"c5.weight"``)."""
    out: dict[str, nn.Parameter] = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            out[f"{name}.weight"] = module.weight
    return out


def layer_kind(weight: torch.Tensor) -> str:
    """``"fc"`` for a linear layer's 2-D weight, ``"conv"`` otherwise (the paper's two bit budgets)."""
    return "fc" if weight.dim() == 2 else "conv"


def parse_layer_spec(spec: str | dict[str, float] | None, what: str, cast=float) -> dict[str, float]:
    """``"c5=0.95,fc=0.9"`` -> {"c5": 0.95, "fc": 0.9}; keys are layer names, ``conv``, ``fc`` or ``*``."""
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return {str(k): cast(v) for k, v in spec.items()}
    out: dict[str, float] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{what}: expected LAYER=VALUE items separated by commas, got {item!r}")
        try:
            out[key.strip()] = cast(value)
        except ValueError:
            raise ValueError(f"{what}: {value!r} (for {key.strip()!r}) is not a number") from None
    return out


def lookup(spec: dict[str, float], weight_name: str, weight: torch.Tensor, default: float | None) -> float | None:
    """The value for one layer: its own name (with or without ``.weight``), then its kind, then ``*``."""
    layer = weight_name[: -len(".weight")] if weight_name.endswith(".weight") else weight_name
    for key in (weight_name, layer, layer_kind(weight), "*"):
        if key in spec:
            return spec[key]
    return default


def check_spec_keys(spec: dict[str, float], names: list[str], what: str) -> None:
    """Every key must name a layer (or be conv/fc/*): a typo must not silently prune nothing."""
    layers = {n[: -len(".weight")] for n in names} | set(names) | {"conv", "fc", "*"}
    bad = [k for k in spec if k not in layers]
    if bad:
        raise ValueError(f"{what}: no prunable layer named {', '.join(map(repr, bad))}; layers are "
                         f"{', '.join(n[: -len('.weight')] for n in names)} (or conv, fc, *)")


def magnitude_mask(weight: torch.Tensor, *, quality: float | None = None, sparsity: float | None = None,
                   previous: torch.Tensor | None = None, std: float | None = None) -> torch.Tensor:
    """Keep-mask of one layer. ``quality``: prune |w| < quality * std, where ``std`` is that of the
    layer's original weights (default: of ``weight``'s unpruned entries); ``sparsity``: prune that
    fraction of the layer (the smallest magnitudes). ``previous`` masks stay pruned (iterative pruning)."""
    w = weight.detach()
    alive = torch.ones_like(w, dtype=torch.bool) if previous is None else previous.bool()
    if sparsity is not None:
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
        n_prune = int(round(sparsity * w.numel()))
        if n_prune == 0:
            return alive.clone()
        mag = w.abs().masked_fill(~alive, -1.0).flatten()  # already-pruned weights sort first
        order = torch.argsort(mag, stable=True)
        keep = torch.ones(w.numel(), dtype=torch.bool)
        keep[order[:n_prune]] = False
        return keep.view_as(w) & alive
    if quality is None:
        return alive.clone()
    if quality < 0:
        raise ValueError(f"prune quality must be >= 0, got {quality}")
    if std is None:
        std = float(w[alive].std()) if alive.sum() > 1 else 0.0
    threshold = quality * std
    return (w.abs() >= threshold) & alive


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the pruned weights in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].dtype))


def mask_gradients(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the gradients of pruned weights, so they carry no optimiser state either."""
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        g = params[name].grad
        if g is not None:
            g.mul_(mask.to(g.dtype))
