"""Drawing what ``cnnzoo.interpretation.maps`` computes: image grids of filters and feature maps, heat maps
over images, signed projections, PNG bytes and ``.npy`` arrays. Pillow and NumPy only.
"""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

_GAP = 2  # pixels between grid cells
_BACKGROUND = 255


def _to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a * 255), 0, 255).astype(np.uint8)


def _stretch(t: torch.Tensor) -> torch.Tensor:
    # Each cell on its own full range: filters and maps differ in scale by orders of magnitude.
    lo, hi = t.min(), t.max()
    return (t - lo) / (hi - lo) if hi > lo else torch.zeros_like(t)


def _as_tensor(x: torch.Tensor | np.ndarray, dims: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().float().cpu()
    if t.dim() != dims:
        raise ValueError(f"{what}: expected {dims} dimensions, got shape {tuple(t.shape)}")
    return t


def grid(cells: Sequence[np.ndarray], cell_size: int, columns: int | None = None) -> Image.Image:
    """Square cells (h, w) or (h, w, 3) of uint8, enlarged to ``cell_size`` pixels (nearest, so
    that each weight or activation stays one visible square) and laid out in rows."""
    if not cells:
        raise ValueError("nothing to draw: no cells")
    columns = columns or math.ceil(math.sqrt(len(cells)))
    rows = math.ceil(len(cells) / columns)
    rgb = cells[0].ndim == 3
    shape = (rows * (cell_size + _GAP) + _GAP, columns * (cell_size + _GAP) + _GAP) + ((3,) if rgb else ())
    canvas = np.full(shape, _BACKGROUND, dtype=np.uint8)
    for i, cell in enumerate(cells):
        img = Image.fromarray(cell).resize((cell_size, cell_size), Image.NEAREST)
        top, left = _GAP + (i // columns) * (cell_size + _GAP), _GAP + (i % columns) * (cell_size + _GAP)
        canvas[top: top + cell_size, left: left + cell_size] = np.asarray(img)
    return Image.fromarray(canvas)


def filter_grid(weights: torch.Tensor, cell_size: int | None = None) -> Image.Image:
    """First-layer kernels (out, C, kh, kw) as a grid (Krizhevsky et al. 2012, Fig. 3): RGB for 3
    input channels, grey (the channels' mean) otherwise, each kernel stretched to its own range."""
    w = _as_tensor(weights, 4, "filter_grid")
    if w.shape[1] == 3:
        cells = [_to_uint8(_stretch(k).permute(1, 2, 0).numpy()) for k in w]
    else:
        cells = [_to_uint8(_stretch(k.mean(dim=0)).numpy()) for k in w]
    k = max(w.shape[-2:])
    return grid(cells, cell_size or k * max(1, 48 // k))  # whole pixels per weight


def feature_grid(maps: torch.Tensor, cell_size: int | None = None) -> Image.Image:
    """Feature maps (k, h, w) as a grid of grey images, each stretched to its own range."""
    m = _as_tensor(maps, 3, "feature_grid")
    cells = [_to_uint8(_stretch(fm).numpy()) for fm in m]
    return grid(cells, cell_size or max(64, max(m.shape[-2:])))


def colormap(heat: torch.Tensor) -> np.ndarray:
    """Values in [0, 1] (H, W) -> uint8 RGB (H, W, 3) on a jet-like scale: blue, cyan, yellow, red."""
    t = heat.clamp(0, 1).numpy()[..., None]
    centres = np.array([0.75, 0.5, 0.25])  # where red, green and blue peak
    return _to_uint8(np.clip(1.5 - np.abs(4 * (t - centres)), 0, 1))


def _image_rgb(image: torch.Tensor) -> np.ndarray:
    img = torch.as_tensor(image)
    if img.dtype != torch.uint8 or img.dim() != 3 or img.shape[0] not in (1, 3):
        raise ValueError(f"expected a uint8 image (1 or 3, H, W), got {img.dtype} {tuple(img.shape)}")
    return img.expand(3, -1, -1).permute(1, 2, 0).cpu().numpy()


def overlay(image_uint8_chw: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5) -> Image.Image:
    """A heat map (H, W) drawn over the image (C, H, W, uint8) in jet-like colours. Negative values
    show as none, and the map is scaled by its maximum, so raw maps (occlusion's probability
    drops) draw as well as Grad-CAM's [0, 1]."""
    rgb = _image_rgb(image_uint8_chw)
    h = _as_tensor(heat, 2, "overlay heat map").clamp_min(0)
    if tuple(h.shape) != rgb.shape[:2]:
        raise ValueError(f"overlay: heat map {tuple(h.shape)} and image {rgb.shape[:2]} differ in size")
    if h.max() > 0:
        h = h / h.max()
    mixed = (1 - alpha) * rgb.astype(np.float32) + alpha * colormap(h).astype(np.float32)
    return Image.fromarray(np.round(mixed).astype(np.uint8))


def signed_image(t: torch.Tensor) -> Image.Image:
    """A signed map (C, H, W), such as a deconvnet projection, with zero as mid-grey and the
    largest magnitude at black or white (Zeiler & Fergus's display)."""
    x = _as_tensor(t, 3, "signed_image")
    scale = x.abs().max()
    x = 0.5 + 0.5 * x / scale if scale > 0 else torch.full_like(x, 0.5)
    arr = _to_uint8(x.permute(1, 2, 0).numpy())
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def image(image_uint8_chw: torch.Tensor) -> Image.Image:
    """A uint8 (C, H, W) image as a PIL image."""
    return Image.fromarray(_image_rgb(image_uint8_chw))


def enlarge(img: Image.Image, min_side: int = 256) -> Image.Image:
    """Scaled up by a whole factor (nearest) until its shorter side reaches ``min_side``: a 28x28
    map is unreadable at its own size."""
    factor = max(1, math.ceil(min_side / min(img.size)))
    return img if factor == 1 else img.resize((img.width * factor, img.height * factor), Image.NEAREST)


def side_by_side(images: Sequence[Image.Image]) -> Image.Image:
    """Images of the same height in one row, with a white gap between them."""
    images = [im.convert("RGB") for im in images]
    height = max(im.height for im in images)
    canvas = Image.new("RGB", (sum(im.width for im in images) + _GAP * (len(images) - 1), height), "white")
    left = 0
    for im in images:
        canvas.paste(im, (left, 0))
        left += im.width + _GAP
    return canvas


def draw_box(img: Image.Image, box: Sequence[int], color: str = "red") -> Image.Image:
    """A copy of ``img`` with the rectangle (top, left, bottom, right), bottom and right exclusive,
    outlined; the parts outside the image are cut off."""
    from PIL import ImageDraw

    top, left, bottom, right = box
    out = img.convert("RGB")
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, out.height), min(right, out.width)
    if bottom > top and right > left:
        ImageDraw.Draw(out).rectangle((left, top, right - 1, bottom - 1), outline=color)
    return out


def to_png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def save_png(img: Image.Image, path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(to_png_bytes(img))
    return path


def save_array(t: torch.Tensor, path: str | Path) -> Path:
    """A map as float32 ``.npy``."""
    path = Path(path)
    np.save(path, torch.as_tensor(t).detach().float().cpu().numpy())
    return path


__all__ = ["colormap", "draw_box", "enlarge", "feature_grid", "filter_grid", "grid", "image", "overlay", "save_array",
           "save_png", "side_by_side", "signed_image", "to_png_bytes"]
