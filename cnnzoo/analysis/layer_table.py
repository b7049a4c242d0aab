"""The per-layer summary table of a network (``summary``) and its MAC count (``count_macs``)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnzoo.analysis.fields import EvalMode, example_input, resolve_input_size, trace
from cnnzoo.analysis.geometry import Number, Pair, as_pair
from cnnzoo.analysis.tables import fmt_pair, fmt_shape, human, human_bytes, table


def count_macs(model: nn.Module, input_size: Sequence[int] | None = None) -> int:
    """Multiply-accumulate operations of convolutions and linear layers for one image of
    ``input_size`` = (C, H, W) (default: the model's ``pretrained_cfg["input_size"]``), counted by
    ``FlopCounterMode`` in eval mode (FLOPs / 2)."""
    size = resolve_input_size(model, input_size)
    x = example_input(model, size)
    counter = FlopCounterMode(display=False)
    with EvalMode(model), torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() // 2



@dataclass
class LayerInfo:
    """One row of a summary: one call of a module (a module called twice gives two rows; the second
    has ``repeated=True`` and its parameters are not counted again in the totals)."""

    name: str
    type: str
    depth: int
    is_leaf: bool
    output_shape: tuple[int, ...] | tuple[tuple[int, ...], ...]
    params: int
    macs: int
    kernel: Pair | None = None
    stride: Pair | None = None
    padding: Pair | str | None = None
    dilation: Pair | None = None
    groups: int | None = None
    ceil_mode: bool | None = None
    rf: tuple[Number, Number] | None = None
    jump: tuple[Number, Number] | None = None
    repeated: bool = False
    feature: int | None = None  # its index in the model's feature_info (out_indices, forward_intermediates)


@dataclass
class ModelSummary:
    model: str
    input_size: tuple[int, ...]
    output_shape: tuple[int, ...] | tuple[tuple[int, ...], ...]
    depth: int | None
    layers: list[LayerInfo] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    total_macs: int = 0
    activation_bytes: int = 0
    param_bytes: int = 0

    def __str__(self) -> str:
        return format_summary(self)


def _geometry(m: nn.Module) -> dict[str, Any]:
    """Kernel, stride, padding, dilation and groups of a convolution or pooling layer."""
    if isinstance(m, nn.modules.conv._ConvNd):
        padding = m.padding if isinstance(m.padding, str) else as_pair(m.padding)
        return dict(
            kernel=as_pair(m.kernel_size), stride=as_pair(m.stride), padding=padding, dilation=as_pair(m.dilation), groups=m.groups
        )
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.LPPool2d)):
        kernel = as_pair(m.kernel_size)
        return dict(
            kernel=kernel,
            stride=as_pair(m.stride, kernel),
            padding=as_pair(getattr(m, "padding", 0)),
            dilation=as_pair(getattr(m, "dilation", 1)),
            ceil_mode=bool(getattr(m, "ceil_mode", False)),
        )
    return {}


def summary(model: nn.Module, input_size: Sequence[int] | None = None, depth: int | None = 3) -> ModelSummary:
    """Per-layer table of ``model`` for one image of ``input_size`` = (C, H, W) (default: the
    model's ``pretrained_cfg["input_size"]``).

    Rows are module calls in execution order, down to ``depth`` levels of nesting (1: the model's
    direct children; ``None``: every level). A row that stands for a folded subtree carries the
    subtree's parameters and MACs. Totals always cover the whole model: parameters (and trainable
    ones) from ``model.parameters()``, MACs of everything that ran, and the activation memory: bytes
    of all floating-point tensors computed from the input in one forward pass (views and in-place
    results not counted twice), i.e. about what a training step keeps for backward, per image.
    """
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth must be an integer >= 0 or None, got {depth!r}")
    tr = trace(model, input_size)
    features = {info["module"]: i for i, info in enumerate(getattr(model, "feature_info", None) or [])}
    rows = []
    for c in tr.calls:
        if depth is not None and c.depth > depth:
            continue
        shapes = c.output_shapes
        rows.append(
            LayerInfo(
                name=c.name or type(c.module).__name__,
                type=type(c.module).__name__,
                depth=c.depth,
                is_leaf=not list(c.module.children()),
                output_shape=shapes[0] if len(shapes) == 1 else shapes,
                params=sum(p.numel() for p in c.module.parameters()),
                macs=c.macs,
                rf=c.field.rf if c.field else None,
                jump=c.field.jump if c.field else None,
                repeated=c.repeated,
                feature=features.get(c.name),
                **_geometry(c.module),
            )
        )
    params = list(model.parameters())
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return ModelSummary(
        model=cfg.get("architecture", type(model).__name__),
        input_size=tr.input_size,
        output_shape=tr.output_shapes[0] if len(tr.output_shapes) == 1 else tr.output_shapes,
        depth=depth,
        layers=rows,
        total_params=sum(p.numel() for p in params),
        trainable_params=sum(p.numel() for p in params if p.requires_grad),
        total_macs=tr.total_macs,
        activation_bytes=tr.activation_bytes,
        param_bytes=sum(p.numel() * p.element_size() for p in params),
    )


def _jsonable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    return v


def summary_to_json(result: ModelSummary) -> dict[str, Any]:
    """The summary as plain JSON data (lists, numbers, strings, null)."""
    layers = []
    for r in result.layers:
        layers.append(
            _jsonable(
                dict(
                    name=r.name, type=r.type, depth=r.depth, is_leaf=r.is_leaf, output_shape=r.output_shape,
                    kernel=r.kernel, stride=r.stride, padding=r.padding, dilation=r.dilation, groups=r.groups,
                    ceil_mode=r.ceil_mode,
                    params=r.params, macs=r.macs, receptive_field=r.rf, jump=r.jump, repeated=r.repeated,
                    feature_index=r.feature,
                )
            )
        )
    return dict(
        model=result.model,
        input_size=list(result.input_size),
        output_shape=_jsonable(result.output_shape),
        depth=result.depth,
        layers=layers,
        totals=dict(
            params=result.total_params,
            trainable_params=result.trainable_params,
            macs=result.total_macs,
            activation_bytes=result.activation_bytes,
            param_bytes=result.param_bytes,
        ),
    )



def format_summary(result: ModelSummary) -> str:
    """An aligned text table of a summary, then the totals."""
    header = ["Layer", "Type", "Kernel", "Stride", "Pad", "Groups", "Output", "Params", "MACs", "RF", "Jump",
              "Feature"]
    rows = []
    for r in result.layers:
        kernel = fmt_pair(r.kernel)
        if kernel and r.dilation and r.dilation != (1, 1):
            kernel += f" d{fmt_pair(r.dilation)}"
        rows.append(
            [
                "  " * max(r.depth - 1, 0) + r.name,
                r.type,
                kernel,
                fmt_pair(r.stride),
                fmt_pair(r.padding) + (" ceil" if r.ceil_mode else ""),
                str(r.groups) if r.groups not in (None, 1) else "",
                fmt_shape(r.output_shape),
                ("(shared) " if r.repeated and r.params else "") + f"{r.params:,}",
                human(r.macs) if r.macs else "0",
                fmt_pair(r.rf) if r.rf else "-",
                fmt_pair(r.jump) if r.jump else "-",
                "" if r.feature is None else str(r.feature),
            ]
        )
    depth = "all levels" if result.depth is None else f"depth {result.depth}"
    lines = [f"{result.model}: input {fmt_shape(result.input_size)} (one image), {depth}"]
    lines += table(header, rows, right={3, 4, 5, 7, 8, 9, 10, 11})
    lines += [
        f"Total params:         {result.total_params:,}",
        f"Trainable params:     {result.trainable_params:,}",
        f"Non-trainable params: {result.total_params - result.trainable_params:,}",
        f"MACs:                 {result.total_macs:,} ({human(result.total_macs, 'MACs')}, conv + linear)",
        f"Activation memory:    {human_bytes(result.activation_bytes)} per image",
        f"Parameter memory:     {human_bytes(result.param_bytes)}",
        f"Output:               {fmt_shape(result.output_shape)}",
        "RF: receptive field (input pixels one output position sees); Jump: input pixels between "
        "neighbouring output positions (product of the strides); after a global pooling or a "
        "flatten, the field of the whole map. Feature: the stage's index in feature_info, as "
        "create_model(..., features_only=True, out_indices=...) and forward_intermediates count them.",
    ]
    return "\n".join(lines)
