"""Image preprocessing built from a model's ``pretrained_cfg``.

``eval_transform(cfg)`` is the evaluation preprocessing published weights were scored with:
resize (shorter side to ``input_size / crop_pct``, the cfg's interpolation, antialiased), centre
crop to ``input_size``, scale to [0, 1], normalise with the cfg's mean and std. It works on uint8
tensors, (C, H, W) or batched (N, C, H, W), and gives what torchvision's ``weights.transforms()``
gives on the same tensor: the resize runs in float32 and is rounded back to 8 bits, as there (the
uint8 kernels of transforms.v2 round differently, by up to one grey level).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

INTERPOLATIONS = ("nearest", "bilinear", "bicubic")


def resize_size(input_size: tuple[int, ...] | list[int], crop_pct: float) -> int | tuple[int, int]:
    """The size evaluation resizes to before the centre crop: the shorter side (an int) for a square
    input, both sides for another. timm's rule, floor(size / crop_pct); the epsilon keeps sizes
    given as a fraction (crop_pct = 299 / 342) from flooring one pixel short."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must lie in (0, 1], got {crop_pct}")
    h, w = input_size[-2:]
    scaled = tuple(math.floor(s / crop_pct + 1e-6) for s in (h, w))
    return scaled[0] if h == w else scaled


class EvalTransform:
    """uint8 image tensor -> normalised float32 tensor of the model's input size (picklable, so that
    DataLoader workers can run it)."""

    def __init__(self, input_size: tuple[int, ...], crop_pct: float, interpolation: str,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        if not len(mean) == len(std) == input_size[0]:
            raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} need one value per input channel "
                             f"({input_size[0]})")
        self.input_size = tuple(input_size)
        self.crop_size = list(input_size[-2:])
        self.resize_size = resize_size(input_size, crop_pct)
        self.interpolation = interpolation
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Resize, centre crop and normalise: float32 of the model's input size."""
        mean = torch.tensor(self.mean).view(-1, 1, 1)
        std = torch.tensor(self.std).view(-1, 1, 1)
        return (self._pixels(img) / 255.0 - mean) / std

    def pixels(self, img: torch.Tensor) -> torch.Tensor:
        """The resized and cropped image before normalisation, as uint8 (for drawing over it)."""
        return self._pixels(img).to(torch.uint8)

    def _pixels(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, torch.Tensor) or img.dtype != torch.uint8 or img.dim() not in (3, 4):
            got = f"{img.dtype} tensor of shape {tuple(img.shape)}" if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(f"eval_transform expects a uint8 (C, H, W) or (N, C, H, W) image tensor, got {got}")
        if img.shape[-3] != self.input_size[0]:
            raise ValueError(f"eval_transform expects {self.input_size[0]} channels, got {img.shape[-3]}")
        single = img.dim() == 3
        x = _center_crop(self._resize(img.unsqueeze(0) if single else img), self.crop_size)
        return x[0] if single else x

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        """Resized, rounded to the 8-bit grid, as float32."""
        h, w = x.shape[-2:]
        if isinstance(self.resize_size, int):  # the shorter side; the longer keeps the aspect ratio (truncated)
            short, long = sorted((h, w))
            new_short, new_long = self.resize_size, int(self.resize_size * long / short)
            size = (new_short, new_long) if h <= w else (new_long, new_short)
        else:
            size = self.resize_size
        if tuple(size) == (h, w):
            return x.float()
        smooth = self.interpolation != "nearest"
        out = F.interpolate(x.float(), size=size, mode=self.interpolation, antialias=smooth,
                            align_corners=False if smooth else None)
        return out.clamp_(0, 255).round_()

    def __repr__(self) -> str:
        return (f"EvalTransform(resize={self.resize_size}, {self.interpolation}, antialias; "
                f"center_crop={self.crop_size}; mean={self.mean}, std={self.std})")


def eval_transform(cfg: Mapping[str, Any] | Any) -> EvalTransform:
    """The evaluation preprocessing of a ``pretrained_cfg`` (a model's dict, or a registry
    ``PretrainedCfg``): reads ``input_size``, ``crop_pct``, ``interpolation``, ``mean`` and ``std``."""
    get = cfg.get if isinstance(cfg, Mapping) else lambda key: getattr(cfg, key, None)
    missing = [k for k in ("input_size", "crop_pct", "interpolation", "mean", "std") if get(k) is None]
    if missing:
        raise ValueError(f"eval_transform: the configuration has no {', '.join(missing)}")
    return EvalTransform(tuple(get("input_size")), float(get("crop_pct")), get("interpolation"),
                         tuple(get("mean")), tuple(get("std")))


def _center_crop(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    th, tw = size
    if th > h or tw > w:
        raise ValueError(f"centre crop {th}x{tw} is larger than the resized image {h}x{w}")
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return x[..., top: top + th, left: left + tw]
