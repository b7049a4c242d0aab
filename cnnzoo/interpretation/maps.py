"""What a network looks at: Grad-CAM, occlusion, feature maps, first-layer filters, deconvnet
projections and guided backpropagation, computed with Captum. Everything returns tensors;
``cnnzoo.interpretation.drawing`` draws them.

Inputs ``x`` are normalised batches of one image (1, C, H, W), as the model takes them. Layers are
named by module path, as ``cnnzoo summary`` prints them. A computation puts the model in eval mode,
turns in-place activations off and installs hooks only for its own duration, and holds the model's
lock (``model_lock``) meanwhile, so threads that share a model do not see each other's hooks.

Captum's deconvnet and guided-backpropagation rules replace the gradient of ``nn.ReLU`` modules
only; ``Deconvolution`` and ``GuidedBackprop`` here apply the same rule to clamp-like activations
(ReLU6, and any ``Hardtanh`` with a lower bound of 0), which MobileNet uses. Other activations
(LeNet-5's tanh option, airbench's GELU) pass the plain gradient.
"""
from __future__ import annotations

import contextlib
import difflib
import math
import threading
import warnings
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from captum._utils.common import _register_backward_hook
from captum.attr import Deconvolution as _CaptumDeconvolution
from captum.attr import GuidedBackprop as _CaptumGuidedBackprop
from captum.attr import LayerActivation, LayerGradCam, Occlusion
from torch import nn

from cnnzoo.analysis import receptive_field
from cnnzoo.analysis.fields import EvalMode

# Images on a black background: occluding them with black changes only the object (Fashion-MNIST's
# mean grey square would itself look like an object).
DARK_BACKGROUND_DATASETS = ("fashion-mnist", "mnist")
BASELINES = {"grey": 0.5, "gray": 0.5, "black": 0.0, "white": 1.0}

_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(model: nn.Module) -> threading.RLock:
    """The lock every computation here holds on ``model``; hold it too to run the model in
    another thread while one may be running (their hooks would fire in your forward pass)."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(model, threading.RLock())


@contextlib.contextmanager
def _inspecting(model: nn.Module) -> Iterator[None]:
    # In-place activations would overwrite the layer outputs that Grad-CAM and the projections
    # read; the flags, modes and hooks are all restored on exit.
    with model_lock(model), EvalMode(model), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU")
        warnings.filterwarnings("ignore", message="Input Tensor .* did not already require gradients")
        inplace = [m for m in model.modules() if getattr(m, "inplace", None) is True]
        for m in inplace:
            m.inplace = False
        try:
            yield
        finally:
            for m in inplace:
                m.inplace = True


def _arch(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("architecture", type(model).__name__)


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[0] != 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected one normalised image as a (1, C, H, W) tensor, got {shape}")


# --------------------------------------------------------------------------------------------------
# Layers and targets


def default_layer(model: nn.Module) -> str:
    """The layer the maps show by default: the last stage of ``feature_info`` (the last
    convolutional stage, where Grad-CAM is meant to look), else the last convolution."""
    info = getattr(model, "feature_info", None)
    if info:
        return info[-1]["module"]
    convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{_arch(model)} has no convolutional layer: it has no feature maps to show")
    return convs[-1]


def layer_names(model: nn.Module) -> list[str]:
    """Every module path of ``model`` in definition order (the names ``cnnzoo summary`` prints)."""
    return [name for name, _ in model.named_modules() if name]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The module at path ``name``; an unknown name is an error that lists the valid ones."""
    modules = dict(model.named_modules())
    if name and name in modules:
        return modules[name]
    names = layer_names(model)
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    stages = [f["module"] for f in getattr(model, "feature_info", None) or []]
    raise ValueError(f"{_arch(model)} has no layer {name!r}{hint}; its stages: {', '.join(stages) or 'none'}; "
                     f"its layers: {', '.join(names)}")


def _resolve_target(model: nn.Module, x: torch.Tensor, target: int | None) -> int:
    if target is None:
        with torch.no_grad():
            return int(model(x)[0].argmax())
    n = (getattr(model, "pretrained_cfg", None) or {}).get("num_classes")
    if n is None:
        with torch.no_grad():
            n = model(x).shape[1]
    if isinstance(target, bool) or not isinstance(target, int) or not 0 <= target < n:
        raise ValueError(f"target class {target!r} is out of range: {_arch(model)} has {n} classes (0..{n - 1})")
    return target


def _not_a_map(model: nn.Module, name: str, shape: Any) -> ValueError:
    return ValueError(f"{_arch(model)}: layer {name!r} outputs {shape}, not a feature map (N, C, H, W); "
                      f"choose a convolutional layer, e.g. {default_layer(model)!r}")


def _feature_map(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """The output of layer ``name`` for ``x`` (1, C, h, w), checked to be a feature map."""
    with torch.no_grad():
        act = LayerActivation(model, get_layer(model, name)).attribute(x)
    if not isinstance(act, torch.Tensor) or act.dim() != 4:
        raise _not_a_map(model, name, tuple(act.shape) if isinstance(act, torch.Tensor) else type(act).__name__)
    return act


# --------------------------------------------------------------------------------------------------
# Class maps


def grad_cam(model: nn.Module, x: torch.Tensor, *, target: int | None = None,
             layer: str | None = None) -> tuple[torch.Tensor, int]:
    """Grad-CAM (Selvaraju et al. 2017) of class ``target`` (default: the predicted one) at
    ``layer``: (H, W) at the input's resolution, scaled to [0, 1], and the target used."""
    _check_input(x)
    layer = layer or default_layer(model)
    module = get_layer(model, layer)
    with _inspecting(model):
        target = _resolve_target(model, x, target)
        cam = LayerGradCam(model, module).attribute(x, target=target, relu_attributions=True)
    if cam.dim() != 4:  # Captum averages the gradient over whatever follows the channels
        raise _not_a_map(model, layer, "no spatial dimensions")
    cam = F.interpolate(cam.detach(), size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    top = cam.max()
    return (cam / top if top > 0 else torch.zeros_like(cam)), target


def baseline_values(model: nn.Module, baseline: float | Sequence[float] | str | None) -> tuple[float, ...]:
    """An occluder's pixel value per channel, in [0, 1]: a name (grey, black, white), one value or
    one per channel; ``None`` is Zeiler & Fergus's grey."""
    channels = len(model.pretrained_cfg["mean"])
    if baseline is None:
        baseline = "grey"
    if isinstance(baseline, str):
        if baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}: give a pixel value in [0, 1] or one of "
                             f"{', '.join(BASELINES)}")
        baseline = BASELINES[baseline]
    values = (float(baseline),) * channels if isinstance(baseline, (int, float)) else tuple(map(float, baseline))
    if len(values) != channels or not all(0.0 <= v <= 1.0 for v in values):
        raise ValueError(f"baseline must be one pixel value in [0, 1] or {channels} (one per channel), got {baseline!r}")
    return values


def default_baseline(dataset: str | None) -> str:
    """Black for datasets of objects on a black background (Fashion-MNIST), else grey."""
    return "black" if dataset in DARK_BACKGROUND_DATASETS else "grey"


def occlusion(model: nn.Module, x: torch.Tensor, *, target: int | None = None, window: int | None = None,
              stride: int | None = None, baseline: float | Sequence[float] | str | None = None) -> tuple[torch.Tensor, int]:
    """Zeiler & Fergus's occlusion map (2014, Fig. 7): how much the probability of ``target``
    (default: the predicted class) drops while a ``window``-pixel square of ``baseline`` (pixel
    value, see ``baseline_values``) covers each place. (H, W), averaged over the windows covering
    each pixel, and the target used. Default window: an eighth of the image side, stride half of it."""
    _check_input(x)
    c, h, w = x.shape[1:]
    window = window or max(2, min(h, w) // 8)
    stride = stride or max(1, window // 2)
    if not 1 <= window <= min(h, w) or stride < 1:
        raise ValueError(f"occlusion window must be 1..{min(h, w)} pixels and stride >= 1, got {window} and {stride}")
    cfg = model.pretrained_cfg
    pixel = torch.tensor(baseline_values(model, baseline), dtype=x.dtype, device=x.device)
    mean, std = (torch.tensor(cfg[k], dtype=x.dtype, device=x.device) for k in ("mean", "std"))
    fill = ((pixel - mean) / std).view(1, -1, 1, 1).expand_as(x).contiguous()

    def probs(inp: torch.Tensor) -> torch.Tensor:
        return model(inp).softmax(dim=1)

    with _inspecting(model), torch.no_grad():
        target = _resolve_target(model, x, target)
        attr = Occlusion(probs).attribute(x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                                          baselines=fill, target=target, perturbations_per_eval=16)
    return attr[0].mean(dim=0), target


# --------------------------------------------------------------------------------------------------
# Filters and feature maps


def first_layer_filters(model: nn.Module) -> torch.Tensor:
    """The first convolution's kernels (out, in_chans, kh, kw), as float32 on the CPU."""
    name = getattr(model, "first_conv", None) or (getattr(model, "pretrained_cfg", None) or {}).get("first_conv")
    module = dict(model.named_modules()).get(name) if name else None
    if not isinstance(module, nn.Conv2d):
        kind = type(module).__name__ if module is not None else "missing"
        raise ValueError(f"{_arch(model)} has no first convolution to show (first_conv {name!r} is {kind})")
    return module.weight.detach().float().cpu().clone()


def feature_maps(model: nn.Module, x: torch.Tensor, *, layer: str | None = None,
                 top: int = 16) -> tuple[torch.Tensor, list[int]]:
    """The ``top`` channels of ``layer``'s output with the largest mean activation, (k, h, w) at
    the layer's resolution, and their channel indices (most active first)."""
    _check_input(x)
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    with _inspecting(model):
        act = _feature_map(model, x, layer or default_layer(model))[0]
    idx = act.mean(dim=(1, 2)).topk(min(top, act.shape[0])).indices
    return act[idx], idx.tolist()


# --------------------------------------------------------------------------------------------------
# Deconvnet and guided backpropagation


def _clamp_like(module: nn.Module) -> bool:
    # ReLU6 is Hardtanh(0, 6): max(x, 0) with a ceiling, i.e. a ReLU wherever it does not saturate.
    return isinstance(module, nn.Hardtanh) and module.min_val == 0


class _ClampLikeRule:
    """Registers Captum's ReLU backward rule on ReLU modules and on clamp-like ones too. The rule
    fits both: deconvnet passes the positive part of the gradient from above whatever the input
    was; guided backpropagation keeps the positive part of the activation's own gradient, which
    for ReLU6 is zero where it saturates, as for ReLU where it is off."""

    backward_hooks: list
    _backward_hook: Any

    def _register_hooks(self, module: nn.Module) -> None:
        if isinstance(module, nn.ReLU) or _clamp_like(module):
            self.backward_hooks.extend(_register_backward_hook(module, self._backward_hook, self))


class Deconvolution(_ClampLikeRule, _CaptumDeconvolution):
    """Captum's deconvnet (Zeiler & Fergus 2014), applied to clamp-like activations as well."""


class GuidedBackprop(_ClampLikeRule, _CaptumGuidedBackprop):
    """Captum's guided backpropagation (Springenberg et al. 2015), with clamp-like activations."""


class LayerUnits(nn.Module):
    """``model`` read at ``layer``: returns that layer's output flattened to (N, C*h*w), so that a
    unit (channel, row, column) is the target ``(channel * h + row) * w + column``. A module called
    more than once (ResNet's shared ReLU) is read at its last call, as Captum's layer methods do."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        super().__init__()
        self.model = model
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []
        handle = get_layer(self.model, self.layer).register_forward_hook(lambda m, args, out: seen.append(out))
        try:
            self.model(x)
        finally:
            handle.remove()
        if not seen:
            raise ValueError(f"{_arch(self.model)}: layer {self.layer!r} did not run in the forward pass")
        return seen[-1].flatten(1)


def unit_field(model: nn.Module, layer: str, position: tuple[int, int],
               input_size: Sequence[int] | None = None) -> tuple[int, int, int, int]:
    """The input pixels that the activation at ``position`` (row, column) of ``layer`` sees, as
    (top, left, bottom, right) with bottom and right exclusive, from ``cnnzoo.analysis``'s
    receptive-field trace (the field of ``cnnzoo summary``). Not clipped: padding lies outside."""
    get_layer(model, layer)
    with model_lock(model):
        # The last call, as LayerUnits reads it.
        field = next((f for f in reversed(receptive_field(model, input_size, leaves_only=False)) if f.name == layer),
                     None)
    if field is None:
        raise ValueError(f"{_arch(model)}: layer {layer!r} has no receptive field (it does not run on the image)")
    box = []
    for axis in range(2):
        centre = field.start[axis] + position[axis] * field.jump[axis]
        half = (field.rf[axis] - 1) / 2
        box.append((math.floor(centre - half), math.ceil(centre + half) + 1))
    (top, bottom), (left, right) = box
    return top, left, bottom, right


def deconv(model: nn.Module, x: torch.Tensor, *, layer: str | None = None,
           unit: int | None = None) -> dict[str, Any]:
    """Zeiler & Fergus's deconvnet projection (2014, Fig. 2/4) of one activation of ``layer``: the
    strongest in the whole layer, or in channel ``unit``; every other activation of the layer is
    zero, and the signal goes back through the max-pooling switches and rectifications to pixels.
    Returns ``deconv`` and ``guided`` (guided backpropagation of the same activation), each
    (C, H, W) at the input's resolution, and ``layer``, ``channel``, ``position`` (row, column in
    the layer's map), ``activation`` (its value) and ``field``: the input pixels it sees
    (``unit_field``), outside which both projections are zero."""
    _check_input(x)
    layer = layer or default_layer(model)
    with _inspecting(model):
        act = _feature_map(model, x, layer)[0]
        n_channels, h, w = act.shape
        if unit is not None and not (isinstance(unit, int) and 0 <= unit < n_channels):
            raise ValueError(f"unit {unit!r} is out of range: layer {layer!r} has {n_channels} channels (0..{n_channels - 1})")
        channel = int(act.amax(dim=(1, 2)).argmax()) if unit is None else unit
        flat = int(act[channel].flatten().argmax())
        row, col = divmod(flat, w)
        index = channel * h * w + flat
        probe = LayerUnits(model, layer)
        projection = Deconvolution(probe).attribute(x.detach().clone(), target=index)
        guided = GuidedBackprop(probe).attribute(x.detach().clone(), target=index)
        field = unit_field(model, layer, (row, col), x.shape[1:])
    return dict(deconv=projection[0].detach(), guided=guided[0].detach(), layer=layer, channel=channel,
                position=(row, col), activation=float(act[channel, row, col]),
                field=field)


__all__ = ["DARK_BACKGROUND_DATASETS", "Deconvolution", "GuidedBackprop", "LayerUnits", "baseline_values",
           "deconv", "default_baseline", "default_layer", "feature_maps", "first_layer_filters", "get_layer",
           "grad_cam", "layer_names", "model_lock", "occlusion", "unit_field"]
