"""``cnnzoo visualize METHOD``: first-layer filters, feature maps, Grad-CAM, occlusion and deconvnet
projections of a network, written as PNG files (and ``.npy`` arrays)."""
from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cnnzoo.cli.common import add_json, add_model_kwargs, add_model_source, model_kwargs, pretrained_arg

METHODS = ("filters", "features", "cam", "occlusion", "deconv")
TEST_IMAGES = 4  # images of the run's test set shown when no IMAGE is given


class _Job:
    """What every method needs: the network, its metadata and the command's options."""

    def __init__(self, model: Any, meta: dict[str, Any], args: argparse.Namespace) -> None:
        self.model, self.meta, self.args = model, meta, args
        self.cfg = model.pretrained_cfg
        self.out = Path(args.out)

    def normalise(self, img: torch.Tensor) -> torch.Tensor:
        from cnnzoo.data.datasets import Normalize

        return Normalize(self.cfg["mean"], self.cfg["std"])(img.unsqueeze(0))

    def png(self, img: Any, name: str) -> str:
        from cnnzoo.interpretation import drawing

        return str(drawing.save_png(drawing.enlarge(img), self.out / f"{name}.png"))

    def array(self, t: torch.Tensor, name: str) -> list[str]:
        from cnnzoo.interpretation import drawing

        return [str(drawing.save_array(t, self.out / f"{name}.npy"))] if self.args.save_array else []

    def target(self) -> int | None:
        return class_index(self.args.target, self.meta["classes"])

    def describe(self, x: torch.Tensor, target: int) -> dict[str, Any]:
        with torch.no_grad():
            prob = float(self.model(x).softmax(dim=1)[0, target])
        return dict(target=target, **{"class": self.meta["classes"][target]}, prob=round(prob, 6))


def class_index(text: str | None, classes: list[str]) -> int | None:
    """``--target``: a class index, or a class name of the weights."""
    if text is None:
        return None
    if re.fullmatch(r"-?\d+", text.strip()):
        return int(text)  # the range is checked against the model's output
    if text in classes:
        return classes.index(text)
    import difflib

    close = difflib.get_close_matches(text, classes, n=3)
    hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"classes: {', '.join(classes[:20])}" + (
        ", ..." if len(classes) > 20 else "")
    raise ValueError(f"--target {text!r} is neither a class index nor a class name ({hint})")


def parse_baseline(text: str) -> str | float | tuple[float, ...]:
    """``--baseline``: grey, black, white, one pixel value in [0, 1] or one per channel (a,b,c)."""
    if not any(ch.isdigit() for ch in text):
        return text
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected grey, black, white or pixel values in [0, 1], got {text!r}")
    return values[0] if len(values) == 1 else values


def load_images(job: _Job, paths: list[str]) -> list[tuple[str, torch.Tensor]]:
    """(name, uint8 (C, H, W) at the model's input size) for each file, or for the first test images
    of the run's dataset, as the run prepared them (``checkpoint_split``)."""
    from cnnzoo.inference.checkpoint_data import checkpoint_split
    from cnnzoo.inference.predict import prepare_image

    if paths:
        return [(Path(p).stem, prepare_image(p, job.cfg, job.meta)) for p in paths]
    if job.meta.get("dataset") is None:
        raise ValueError(f"`visualize {job.args.method}` needs IMAGE files: {job.cfg['architecture']} does not come "
                         "from a run trained on a dataset cnnzoo can load")
    ds, _ = checkpoint_split(job.cfg, job.meta, "test", images=TEST_IMAGES, seed=None)
    return [(f"test{i}_{_slug(ds.classes[y])}", img) for i, (img, y) in enumerate(zip(ds.images, ds.labels.tolist()))]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-") or "class"


# --------------------------------------------------------------------------------------------------
# One function per method: (job, image name, uint8 image) -> what was shown and written


def show_features(job: _Job, name: str, img: torch.Tensor) -> dict[str, Any]:
    import torch.nn.functional as F

    from cnnzoo.interpretation import drawing, maps

    layer = job.args.layer or maps.default_layer(job.model)
    maps, channels = maps.feature_maps(job.model, job.normalise(img), layer=layer, top=job.args.top)
    files = [job.png(drawing.feature_grid(maps), f"{name}_features")]
    full = F.interpolate(maps[None], size=img.shape[-2:], mode="bilinear", align_corners=False)[0]
    files += job.array(full, f"{name}_features")
    return dict(layer=layer, channels=channels, files=files)


def show_cam(job: _Job, name: str, img: torch.Tensor) -> dict[str, Any]:
    from cnnzoo.interpretation import drawing, maps

    x = job.normalise(img)
    layer = job.args.layer or maps.default_layer(job.model)
    heat, target = maps.grad_cam(job.model, x, target=job.target(), layer=layer)
    files = [job.png(drawing.side_by_side([drawing.image(img), drawing.overlay(img, heat)]), f"{name}_cam")]
    return dict(layer=layer, **job.describe(x, target), files=files + job.array(heat, f"{name}_cam"))


def show_occlusion(job: _Job, name: str, img: torch.Tensor) -> dict[str, Any]:
    from cnnzoo.interpretation import drawing, maps

    x = job.normalise(img)
    baseline = job.args.baseline or maps.default_baseline(job.meta.get("dataset"))
    heat, target = maps.occlusion(job.model, x, target=job.target(), window=job.args.window,
                                       stride=job.args.stride, baseline=baseline)
    files = [job.png(drawing.side_by_side([drawing.image(img), drawing.overlay(img, heat)]), f"{name}_occlusion")]
    return dict(baseline=baseline, **job.describe(x, target), files=files + job.array(heat, f"{name}_occlusion"))


def show_deconv(job: _Job, name: str, img: torch.Tensor) -> dict[str, Any]:
    from cnnzoo.interpretation import drawing, maps

    res = maps.deconv(job.model, job.normalise(img), layer=job.args.layer, unit=job.args.unit)
    panels = [drawing.draw_box(drawing.image(img), res["field"]), drawing.signed_image(res["deconv"]), drawing.signed_image(res["guided"])]
    files = [job.png(drawing.side_by_side(panels), f"{name}_deconv")]
    files += job.array(res["deconv"], f"{name}_deconv") + job.array(res["guided"], f"{name}_guided")
    keep = ("layer", "channel", "position", "activation", "field")
    return dict({k: res[k] for k in keep}, files=files)


SHOW: dict[str, Callable[[_Job, str, torch.Tensor], dict[str, Any]]] = dict(
    features=show_features, cam=show_cam, occlusion=show_occlusion, deconv=show_deconv)


def show_filters(job: _Job) -> dict[str, Any]:
    from cnnzoo.interpretation import drawing, maps

    weights = maps.first_layer_filters(job.model)
    files = [job.png(drawing.filter_grid(weights), "filters")] + job.array(weights, "filters")
    return dict(layer=job.model.first_conv, shape=list(weights.shape), files=files)


# --------------------------------------------------------------------------------------------------


def load_network(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    from torch import nn

    from cnnzoo.inference.load import load_model

    model, meta = load_model(args.checkpoint, args.model, pretrained=pretrained_arg(args),
                             model_kwargs=model_kwargs(args))
    # An ONNX Runtime session has no layers or gradients to look into.
    if not isinstance(model, nn.Module) or not any(True for _ in model.parameters()):
        raise ValueError(f"{args.checkpoint}: visualize needs the PyTorch network (a run folder, .safetensors or "
                         f".cnnz file), not an exported {Path(str(args.checkpoint)).suffix} file")
    return model, meta


def cmd_visualize(args: argparse.Namespace) -> Any:
    model, meta = load_network(args)
    job = _Job(model, meta, args)
    if args.method == "filters":
        job.out.mkdir(parents=True, exist_ok=True)
        res = show_filters(job)
        print(f"{job.cfg['architecture']}: first convolution {res['layer']} {tuple(res['shape'])} -> "
              f"{', '.join(res['files'])}")
        return res
    images = load_images(job, args.images)
    job.out.mkdir(parents=True, exist_ok=True)
    results = []
    for name, img in images:
        res = dict(image=name, **SHOW[args.method](job, name, img))
        what = f"class {res['target']} ({res['class']}, p={res['prob']:.3f})" if "target" in res else \
            f"layer {res['layer']}"
        print(f"{name}: {args.method} of {what} -> {', '.join(res['files'])}")
        results.append(res)
    return results


HELP = dict(
    filters="the first convolution's kernels as a grid (Krizhevsky et al. 2012, Fig. 3)",
    features="a layer's most active channels for each image, as a grid",
    cam="Grad-CAM (Selvaraju et al. 2017) of the predicted class or --target over each image",
    occlusion="the target's probability drop as a square slides over the image (Zeiler & Fergus 2014, Fig. 7)",
    deconv="a layer's strongest activation projected back to pixels (Zeiler & Fergus 2014, Fig. 2/4), "
           "beside guided backpropagation",
)


def _add_method_parser(methods: argparse._SubParsersAction, name: str) -> argparse.ArgumentParser:
    m = methods.add_parser(name, help=HELP[name], description=HELP[name] + ".")
    add_model_source(m)
    if name == "filters":
        m.set_defaults(images=[])
    else:
        m.add_argument("images", nargs="*", metavar="IMAGE",
                       help=f"image files (default: the first {TEST_IMAGES} test images of the run's dataset)")
    m.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG (and .npy) files")
    m.add_argument("--save-array", action="store_true",
                   help="also write each map as .npy (maps at the input's resolution; filters as they are)")
    if name != "filters":
        m.add_argument("--layer", help="module path as `cnnzoo summary` prints it (default: the last convolutional "
                                       "stage)")
    add_model_kwargs(m)
    add_json(m)
    m.set_defaults(func=cmd_visualize)
    return m


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("visualize", help="filters, feature maps, Grad-CAM, occlusion and deconvnet projections as PNG",
                       description="See what a network looks at. Without IMAGE, the first test images of the "
                                   "run's dataset are shown. `cnnzoo visualize METHOD --help` lists its flags.")
    methods = s.add_subparsers(dest="method", required=True, metavar="METHOD")
    parsers = {name: _add_method_parser(methods, name) for name in METHODS}
    for name in ("cam", "occlusion"):
        parsers[name].add_argument("--target", metavar="CLASS", help="class index or name (default: the predicted one)")
    occ = parsers["occlusion"]
    occ.add_argument("--baseline", type=parse_baseline, metavar="grey|black|white|VALUE",
                     help="occluder's pixel value in [0, 1], one or one per channel (default: black for "
                          "Fashion-MNIST and MNIST runs, else Zeiler & Fergus's grey)")
    occ.add_argument("--window", type=int, help="occluder side in pixels (default: an eighth of the image)")
    occ.add_argument("--stride", type=int, help="occluder step in pixels (default: half the window)")
    parsers["features"].add_argument("--top", type=int, default=16, help="how many channels to show")
    parsers["deconv"].add_argument("--unit", type=int, metavar="CHANNEL",
                                   help="project this channel's strongest activation (default: the layer's strongest)")
