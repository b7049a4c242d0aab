"""The method set every cnnzoo model shares (timm's conventions).

A family subclasses ``ZooModel``, builds its layers in ``__init__`` and implements
``forward_features`` (image -> feature map) and ``forward_head`` (feature map -> logits, or the
pooled features with ``pre_logits=True``). It names its first convolution and final linear layer in
``first_conv`` and ``classifier_name`` (dotted module paths), which is all ``cnnzoo.weights`` needs
to adapt weight files to other input channels or class counts.

``create_model`` gives each model its configuration as the dict ``pretrained_cfg`` (timm reads it
with ``.get``; ``default_cfg`` is the same dict, as in timm). A configuration is never edited in
place: ``set_pretrained_cfg`` gives the model a new dict, so whoever holds the old one (a copy of
the model, a caller) keeps what it was given.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ZooModel(nn.Module):
    first_conv: str = "conv1"
    classifier_name: str = "fc"
    # {layout: [(regex, replacement), ...]} renaming a reference's state_dict keys to ours.
    KEY_MAPS: dict[str, list[tuple[str, str]]] = {}
    # Names of optional auxiliary classifier modules (trained with, dropped at inference).
    aux_heads: tuple[str, ...] = ()
    pretrained_cfg: dict[str, Any]

    num_classes: int
    num_features: int  # width of the pre-logits features

    @property
    def default_cfg(self) -> dict[str, Any]:
        return self.pretrained_cfg

    @default_cfg.setter
    def default_cfg(self, cfg: dict[str, Any]) -> None:
        self.pretrained_cfg = cfg

    @default_cfg.deleter
    def default_cfg(self) -> None:
        del self.pretrained_cfg

    def set_pretrained_cfg(self, **changes: Any) -> None:
        """Replace the model's configuration by a new dict: the current one with ``changes``."""
        cfg = getattr(self, "pretrained_cfg", None)
        if cfg is None:
            raise AttributeError(f"{type(self).__name__} has no pretrained_cfg to change (create_model gives one)")
        unknown = sorted(set(changes) - set(cfg))
        if unknown:
            raise ValueError(f"{cfg['architecture']}: no configuration field {', '.join(map(repr, unknown))} "
                             f"(known: {', '.join(sorted(cfg))})")
        self.pretrained_cfg = {**cfg, **changes}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.classifier_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final linear layer by a fresh one with ``num_classes`` outputs (0: identity)."""
        old = self.get_classifier()
        in_features = old.in_features if isinstance(old, nn.Linear) else self.num_features
        new: nn.Module = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()
        parent_name, _, leaf = self.classifier_name.rpartition(".")
        parent = self.get_submodule(parent_name) if parent_name else self
        setattr(parent, leaf, new)
        self.num_classes = num_classes
        if hasattr(self, "pretrained_cfg"):
            self.set_pretrained_cfg(num_classes=num_classes)

    def check_input(self, x: torch.Tensor) -> None:
        """Reject inputs the network cannot take with a message that says what it can take."""
        if torch.jit.is_tracing() or torch.compiler.is_compiling() or not hasattr(self, "pretrained_cfg"):
            return
        cfg = self.pretrained_cfg
        if x.dim() != 4:
            raise ValueError(f"{cfg['architecture']} expects a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
        c, h, w = cfg["min_input_size"]
        if x.shape[1] != c:
            raise ValueError(
                f"{cfg['architecture']} was built for {c} input channels, got {x.shape[1]} "
                f"(create it with in_chans={x.shape[1]})"
            )
        if cfg["fixed_input_size"]:
            if tuple(x.shape[2:]) != (h, w):
                raise ValueError(f"{cfg['architecture']} takes exactly {h}x{w} inputs, got {x.shape[2]}x{x.shape[3]}")
        elif x.shape[2] < h or x.shape[3] < w:
            small = cfg.get("small_variant")
            hint = f"; for small images use '{small}'" if small and small != cfg["architecture"] else ""
            raise ValueError(
                f"{cfg['architecture']} needs inputs of at least {h}x{w}, got {x.shape[2]}x{x.shape[3]}{hint}"
            )
