"""The checkpoints the explorer serves, and what it does with an uploaded image.

A checkpoint is known to clients by a short id (its run folder's or file's name), never by its
path: nothing a client sends is turned into a file name. Calls come from a thread pool, off the
event loop; each holds its model's lock (``maps.model_lock``), because Grad-CAM hooks the
model while it runs and a concurrent forward pass would fire those hooks.
"""
from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cnnzoo.data.datasets import Normalize
from cnnzoo.explore.zoo import UnknownName
from cnnzoo.inference.checkpoint_data import checkpoint_split
from cnnzoo.inference.load import load_model
from cnnzoo.inference.predict import prepare_image
from cnnzoo.interpretation import drawing, maps
from cnnzoo.interpretation.drawing import to_png_bytes

DEFAULT_MAX_PIXELS = 40_000_000  # a 40-megapixel photo decodes; a decompression bomb does not
TOPK_MAX = 20
MAPS = {"cam": "Grad-CAM", "occlusion": "occlusion", "features": "feature maps"}
# Why an ONNX file offers no Grad-CAM or feature maps (occlusion needs forward passes only).
GRAPH_ONLY = "an ONNX file runs forward passes only: {} needs the PyTorch network (its run folder or weights)"


class ImageRejected(ValueError):
    """An upload that cannot be used: empty, not an image, or too large. ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Checkpoint:
    id: str
    source: str
    model: torch.nn.Module
    meta: dict[str, Any]
    _samples: Any = field(default=None, repr=False)  # the test images, loaded on first use

    @property
    def architecture(self) -> str:
        return self.model.pretrained_cfg["architecture"]

    @property
    def graph_only(self) -> bool:
        """An exported .onnx file (e.g. ``cnnzoo quantize``'s int8 one): forward passes only."""
        return Path(self.source).suffix == ".onnx"

    @property
    def methods(self) -> tuple[str, ...]:
        return ("occlusion",) if self.graph_only else tuple(MAPS)

    def describe(self) -> dict[str, Any]:
        cfg = self.model.pretrained_cfg
        return dict(id=self.id, model=self.architecture, dataset=self.meta.get("dataset"),
                    classes=list(self.meta["classes"]), input_size=list(cfg["input_size"]),
                    layers=[] if self.graph_only else feature_layers(self.model), methods=list(self.methods),
                    precision="int8" if "quantization" in self.meta else "fp32")


def feature_layers(model: torch.nn.Module) -> list[str]:
    """The layers offered for feature maps: the ``feature_info`` stages, earliest first."""
    return [info["module"] for info in getattr(model, "feature_info", None) or []]


def load_checkpoints(sources: list[str | Path]) -> dict[str, Checkpoint]:
    """Each run folder or weights file, loaded once, under a unique id."""
    out: dict[str, Checkpoint] = {}
    for src in sources:
        model, meta = load_model(src)
        base = Path(src).name or "checkpoint"
        cid, n = base, 1
        while cid in out:
            n += 1
            cid = f"{base}-{n}"
        out[cid] = Checkpoint(id=cid, source=str(src), model=model, meta=meta)
    return out


def check_upload(data: bytes, max_bytes: int, max_pixels: int) -> None:
    """Refuse an upload before decoding it: empty, over ``max_bytes``, not an image, or with more
    than ``max_pixels`` pixels in its header (the size a decompression bomb claims)."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageRejected("the uploaded file 'image' is empty")
    if len(data) > max_bytes:
        raise ImageRejected(f"the uploaded file is {len(data):,} bytes; the limit is {max_bytes:,}", 413)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:  # reads the header only
                w, h = img.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected(f"image too large to decode ({exc}); the limit is {max_pixels:,} pixels", 413) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(f"the uploaded file is not an image PIL can read ({type(exc).__name__})") from exc
    if w * h > max_pixels:
        raise ImageRejected(f"image is {w} x {h} = {w * h:,} pixels; the limit is {max_pixels:,}", 413)


def decode_upload(ckpt: Checkpoint, data: bytes) -> torch.Tensor:
    """The upload as the checkpoint's model sees it, uint8 (C, H, W)."""
    buf = io.BytesIO(data)
    buf.name = "the uploaded image"
    try:
        return prepare_image(buf, ckpt.model.pretrained_cfg, ckpt.meta)
    except ValueError as exc:
        raise ImageRejected(str(exc)) from exc


def sample_images(ckpt: Checkpoint, count: int = 12) -> Any:
    """A fixed, seeded pick of ``count`` test images of the checkpoint's dataset (loaded once), of
    the run's classes and at its training images' size (``checkpoint_split``): shown as they are,
    and fitted to the model's input like an upload when one is picked."""
    if ckpt._samples is None:
        dataset = ckpt.meta.get("dataset")
        if not dataset or dataset in ("synthetic", "imagefolder"):
            raise UnknownName(f"checkpoint {ckpt.id!r} has no test images to pick from (dataset {dataset!r})")
        try:
            ckpt._samples, _ = checkpoint_split(ckpt.model.pretrained_cfg, ckpt.meta, "test", images=count,
                                                fit_input=False)
        except (OSError, ValueError) as exc:
            raise UnknownName(f"checkpoint {ckpt.id!r}: its test images cannot be read ({exc})") from exc
    return ckpt._samples


def png_data_url(img: Any) -> str:
    return "data:image/png;base64," + base64.b64encode(to_png_bytes(img)).decode("ascii")


def predict(ckpt: Checkpoint, image: torch.Tensor, *, topk: int = 5, cam: bool = True, occlusion: bool = False,
            features: bool = False, layer: str | None = None) -> dict[str, Any]:
    """Top-k of one uint8 (C, H, W) image and, as PNG data URLs, the maps asked for: Grad-CAM and
    occlusion over the image (for the top class), the most active channels of ``layer``. A map the
    checkpoint cannot make (an ONNX file's Grad-CAM) is left out, with the reason in ``unavailable``."""
    model, cfg = ckpt.model, ckpt.model.pretrained_cfg
    asked = dict(cam=cam, occlusion=occlusion, features=features)
    unavailable = {k: GRAPH_ONLY.format(MAPS[k]) for k, on in asked.items() if on and k not in ckpt.methods}
    cam, occlusion, features = (asked[k] and k not in unavailable for k in MAPS)
    if layer is not None and features:
        maps.get_layer(model, layer)  # an unknown name is a ValueError listing the model's layers
    x = Normalize(cfg["mean"], cfg["std"])(image.unsqueeze(0))
    with maps.model_lock(model):
        with torch.inference_mode():
            probs = model(x).softmax(dim=1)[0]
        top = probs.topk(min(topk, cfg["num_classes"]))
        classes = ckpt.meta["classes"]
        out: dict[str, Any] = dict(
            checkpoint=ckpt.id, model=ckpt.architecture,
            top=[{"class": classes[i], "class_index": i, "prob": round(p, 6)}
                 for p, i in zip(top.values.tolist(), top.indices.tolist())])
        target = int(top.indices[0])
        if features:
            out["layer"] = layer or maps.default_layer(model)
        out["images"] = _maps(ckpt, x, image, target, cam=cam, occlusion=occlusion, features=features, layer=layer)
    if unavailable:
        out["unavailable"] = unavailable
    return out


def _maps(ckpt: Checkpoint, x: torch.Tensor, image: torch.Tensor, target: int, *, cam: bool,
          occlusion: bool, features: bool, layer: str | None) -> dict[str, str]:
    model = ckpt.model
    images = {"input": png_data_url(drawing.image(image))}
    if cam:
        heat, _ = maps.grad_cam(model, x, target=target)
        images["cam"] = png_data_url(drawing.overlay(image, heat))
    if occlusion:
        # Non-overlapping squares an eighth of the side: 64 forward passes, an answer in a second
        # or two rather than the ~700 of half-overlapping 3-pixel squares on a 28-pixel image.
        window = max(2, min(x.shape[-2:]) // 8)
        baseline = maps.default_baseline(ckpt.meta.get("dataset"))
        heat, _ = maps.occlusion(model, x, target=target, window=window, stride=window, baseline=baseline)
        images["occlusion"] = png_data_url(drawing.overlay(image, heat))
    if features:
        fmaps, _ = maps.feature_maps(model, x, layer=layer)
        images["features"] = png_data_url(drawing.feature_grid(fmaps))
    return images


def first_layer_filters_png(ckpt: Checkpoint) -> bytes:
    if ckpt.graph_only:
        raise UnknownName(f"checkpoint {ckpt.id!r} is an ONNX file: its filters are shown from its run folder or weights")
    weights = maps.first_layer_filters(ckpt.model)
    return drawing.to_png_bytes(drawing.filter_grid(weights))
