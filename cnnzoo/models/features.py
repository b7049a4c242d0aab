"""Multi-scale feature maps from any cnnzoo model, as timm's ``features_only`` models give them.

Every model lists its stages in ``feature_info`` (dicts with ``num_chs``, ``reduction`` -- the
stage's total stride -- and ``module``, the module whose output is the stage's map).
``create_model(name, features_only=True, out_indices=...)`` wraps the model in a
``FeatureExtractor``: its forward returns the chosen stages' maps as a list, and its
``feature_info`` is a ``FeatureInfo`` over the chosen stages.

``feature_cls`` takes timm's names (timm/models/_builder.py): ``"list"`` (the default),
``"getter"`` and ``"hook"`` give that list, ``"dict"`` the same maps keyed by stage index, ``"fx"``
an FX graph module (torchvision's ``create_feature_extractor``) returning the list. timm reaches the
maps by rebuilding the network from its children, by hooks or by ``forward_intermediates``; every
cnnzoo model has ``forward_intermediates``, so the first three are one extractor here.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

FEATURE_CLASSES = ("list", "getter", "hook", "dict", "fx")


def take_indices(num_stages: int, indices: int | Sequence[int] | None, arch: str = "model") -> tuple[list[int], int]:
    """Resolve timm's stage selection: None -> all stages, an int n -> the last n, a sequence ->
    those stages (negative ones count from the end). Returns (sorted indices, the largest)."""
    if num_stages == 0:
        raise ValueError(f"{arch} has no convolutional stages to take feature maps from")
    if indices is None:
        chosen = list(range(num_stages))
    elif isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"{arch}: asked for the last {indices} stages, it has {num_stages}")
        chosen = list(range(num_stages - indices, num_stages))
    else:
        chosen = []
        for i in indices:
            if not isinstance(i, int) or not -num_stages <= i < num_stages:
                raise ValueError(f"{arch}: stage index {i!r} out of range for {num_stages} stages")
            chosen.append(i % num_stages)
        if not chosen:
            raise ValueError(f"{arch}: no stage indices given")
        chosen = sorted(set(chosen))
    return chosen, chosen[-1]


def last_per_reduction(stages: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """``feature_info`` from (module, channels, reduction) in forward order, keeping the last
    module at each reduction: the map each resolution ends with."""
    info: list[dict[str, Any]] = []
    for module, channels, reduction in stages:
        if info and info[-1]["reduction"] == reduction:
            info.pop()
        info.append(dict(num_chs=channels, reduction=reduction, module=module))
    return info


class FeatureInfo:
    """The stages of a feature extractor: ``channels()``, ``reduction()`` and ``module_name()``
    list the chosen stages' values, or one stage's with ``idx`` (an index into all stages)."""

    def __init__(self, info: list[dict[str, Any]], out_indices: Sequence[int]) -> None:
        self.info = [dict(d) for d in info]
        self.out_indices = tuple(out_indices)

    def get(self, key: str, idx: int | Sequence[int] | None = None) -> Any:
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, (list, tuple)):
            return [self.info[i][key] for i in idx]
        return self.info[idx][key]

    def get_dicts(self, keys: Sequence[str] | None = None) -> list[dict[str, Any]]:
        return [{k: v for k, v in self.info[i].items() if keys is None or k in keys} for i in self.out_indices]

    def channels(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("num_chs", idx)

    def reduction(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("reduction", idx)

    def module_name(self, idx: int | Sequence[int] | None = None) -> Any:
        return self.get("module", idx)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.info[idx]

    def __len__(self) -> int:
        return len(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(out_indices={self.out_indices}, channels={self.channels()}, reduction={self.reduction()})"


class FeatureExtractor(nn.Module):
    """A model cut after its last chosen stage; forward returns the chosen stages' feature maps,
    as a list, or as a dict keyed by stage index (``return_dict``, timm's ``FeatureDictNet`` keys)."""

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None,
                 return_dict: bool = False) -> None:
        super().__init__()
        self.model = model
        self.out_indices = model.prune_intermediate_layers(out_indices, prune_head=True)
        self.feature_info = FeatureInfo(model.feature_info, self.out_indices)
        self.return_dict = return_dict
        if hasattr(model, "pretrained_cfg"):
            self.pretrained_cfg = model.pretrained_cfg

    @property
    def default_cfg(self) -> dict[str, Any]:
        """The model's configuration under timm's older name, as on every zoo model."""
        return self.pretrained_cfg

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | dict[str, torch.Tensor]:
        maps = self.model.forward_intermediates(x, indices=self.out_indices, intermediates_only=True)
        return OrderedDict(zip(map(str, self.out_indices), maps)) if self.return_dict else maps

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)


class FeatureGraphExtractor(nn.Module):
    """timm's ``feature_cls="fx"``: the cut model traced into one FX graph that returns the chosen
    stages' maps as a list (a module torch.fx tooling can rewrite and export)."""

    def __init__(self, model: nn.Module, out_indices: int | Sequence[int] | None = None) -> None:
        super().__init__()
        cut = FeatureExtractor(model, out_indices)
        self.out_indices, self.feature_info = cut.out_indices, cut.feature_info
        if hasattr(model, "pretrained_cfg"):
            self.pretrained_cfg = model.pretrained_cfg
        nodes = {self.feature_info.module_name(i): str(i) for i in self.out_indices}
        self.graph_module = create_feature_extractor(model, return_nodes=nodes)

    @property
    def default_cfg(self) -> dict[str, Any]:
        return self.pretrained_cfg

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.graph_module(x).values())


def feature_extractor(model: nn.Module, out_indices: int | Sequence[int] | None = None,
                      feature_cls: str | None = None) -> nn.Module:
    """The ``features_only`` wrapper timm's ``feature_cls`` names (None: ``"list"``)."""
    kind = "list" if feature_cls is None else feature_cls
    if not isinstance(kind, str) or kind.lower() not in FEATURE_CLASSES:
        raise ValueError(f"feature_cls must be one of {', '.join(map(repr, FEATURE_CLASSES))} (timm's names), "
                         f"got {feature_cls!r}")
    kind = kind.lower()
    if kind == "fx":
        return FeatureGraphExtractor(model, out_indices)
    return FeatureExtractor(model, out_indices, return_dict=kind == "dict")
