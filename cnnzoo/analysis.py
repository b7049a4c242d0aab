"""Look inside a network: per-layer table, operation counts, receptive fields, output sizes and the
arithmetic of factorised convolutions.

- ``summary(model, input_size, depth)``: one row per module call with its kernel, stride, padding,
  groups, output shape, parameters, MACs, and the receptive field and effective stride ("jump") of
  its output; totals for parameters, MACs and activation memory. ``format_summary`` prints it as a
  table, ``summary_to_json`` turns it into plain JSON data.
- ``count_macs(model, input_size)``: multiply-accumulates for one image.
- ``conv_output_size(n, kernel, stride, padding, dilation, ceil_mode)``: PyTorch's output-size rule
  for convolutions and pooling.
- ``receptive_field(model, input_size)``: receptive field and jump after every leaf module,
  propagated through the real computation graph (branches, concatenations, shortcuts).
- ``factorize(kernel, channels_in, channels_out, size)``: one k x k convolution against a stack of
  3 x 3 convolutions (VGG) and against a 1 x k + k x 1 pair (Inception v3).

How the numbers are obtained. The model runs once, in eval mode, on one image (zeros; on a meta
model nothing is computed at all). ``torch.utils.flop_counter.FlopCounterMode`` counts the FLOPs of
convolutions and matrix products; 1 MAC = 2 FLOPs, and MACs are reported, which is the convention of
the published figures (torchvision's ``_ops``, timm's ``gmacs``, the papers' "mult-adds"): batch
norm, activations, pooling, additions and biases are not counted. A second dispatch mode follows
every tensor computed from the input and carries its receptive field along, so that what is
reported is what the code really does, not what a layer list suggests.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakTensorKeyDictionary

__all__ = [
    "LayerInfo",
    "ModelSummary",
    "LayerField",
    "FactorOption",
    "FactorizeResult",
    "summary",
    "format_summary",
    "summary_to_json",
    "count_macs",
    "conv_output_size",
    "receptive_field",
    "factorize",
    "format_factorize",
    "factorize_to_json",
    "plot_factorize",
]

Pair = tuple[int, int]
Number = int | float


# --------------------------------------------------------------------------------------------------
# Output size of a convolution or pooling layer


def conv_output_size(
    n: int,
    kernel: int,
    stride: int = 1,
    padding: int | str = 0,
    dilation: int = 1,
    ceil_mode: bool = False,
) -> int:
    """Output length along one axis of a convolution or pooling layer, exactly as PyTorch computes it.

        out = floor((n + 2p - d(k - 1) - 1) / s) + 1

    ``d(k - 1) + 1`` is the dilated kernel's extent; without dilation this is the familiar
    ``floor((n + 2p - k) / s) + 1``. The stride divides the numerator (a formula written
    ``(n + 2p - f) / 2 + 1`` is this one with the stride 2 filled in, and wrong for any other stride).

    With ``ceil_mode=True`` (pooling only) the division rounds up, so a partial window at the end
    counts, except that the last window must start inside the input or the left padding:
    if ``(out - 1) * s >= n + p`` the last window is dropped.

    ``padding`` may also be ``"valid"`` (0) or ``"same"`` (output = input; stride 1 only), as
    ``nn.Conv2d`` accepts. Raises ``ValueError`` where PyTorch refuses the layer (output < 1).
    """
    for arg, value, low in (("n", n, 1), ("kernel", kernel, 1), ("stride", stride, 1), ("dilation", dilation, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
    if isinstance(padding, str):
        if padding == "valid":
            padding = 0
        elif padding == "same":
            if stride != 1:
                raise ValueError("padding='same' needs stride 1 (as in nn.Conv2d)")
            return n
        else:
            raise ValueError(f"padding must be an integer, 'valid' or 'same', got {padding!r}")
    if not isinstance(padding, int) or padding < 0:
        raise ValueError(f"padding must be an integer >= 0, got {padding!r}")
    extent = dilation * (kernel - 1) + 1
    numerator = n + 2 * padding - extent + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1  # floor division, as PyTorch's div_rtn
    if ceil_mode and (out - 1) * stride >= n + padding:
        out -= 1
    if out < 1:
        raise ValueError(
            f"input of size {n} is too small for kernel {kernel} (extent {extent} with dilation "
            f"{dilation}), stride {stride}, padding {padding}: the output would be {out}"
        )
    return out


# --------------------------------------------------------------------------------------------------
# Receptive-field propagation


@dataclass(frozen=True)
class _Field:
    """The receptive field carried by a tensor: per spatial axis (height, width), the size of the
    input region one position sees, the distance in input pixels between neighbouring positions
    (jump, the product of the strides so far) and the centre of the first position's region in input
    pixel coordinates (negative: it sits in the padding)."""

    rf: tuple[Number, Number]
    jump: tuple[Number, Number]
    start: tuple[Number, Number]

    def windowed(self, kernel: Pair, stride: Sequence[Number], padding: Pair, dilation: Pair = (1, 1)) -> _Field:
        # A window of k (dilated extent d(k-1)+1) positions of the input: the field grows by
        # (extent - 1) input jumps; its stride multiplies the jump.
        rf, jump, start = [], [], []
        for a in range(2):
            extent = dilation[a] * (kernel[a] - 1) + 1
            rf.append(self.rf[a] + (extent - 1) * self.jump[a])
            start.append(self.start[a] + ((extent - 1) / 2 - padding[a]) * self.jump[a])
            jump.append(self.jump[a] * stride[a])
        return _Field(_tidy2(rf), _tidy2(jump), _tidy2(start))

    def whole(self, size: Sequence[int]) -> _Field:
        """The field of something computed from every position of a map of ``size``: a window
        that covers the whole map (global pooling, flatten + linear, squeeze-excitation)."""
        return self.windowed((size[0], size[1]), (size[0], size[1]), (0, 0))

    def resampled(self, size_in: Sequence[int], size_out: Sequence[int]) -> _Field:
        # Unknown resampling (interpolation...): same field, positions spaced by the size ratio.
        jump = tuple(self.jump[a] * size_in[a] / size_out[a] for a in range(2))
        return _Field(self.rf, _tidy2(jump), self.start)


def _tidy(x: Number) -> Number:
    return int(x) if float(x).is_integer() else float(x)


def _tidy2(xs: Sequence[Number]) -> tuple[Number, Number]:
    return (_tidy(xs[0]), _tidy(xs[1]))


def _spatial(t: torch.Tensor) -> Pair | None:
    # The two last dimensions of an image batch (N, C, H, W), or of a view of one with more
    # dimensions (a channel shuffle's (N, g, C/g, H, W)); tensors with fewer have no positions.
    return (int(t.shape[-2]), int(t.shape[-1])) if t.dim() >= 4 else None


def _pair(v: Any, default: Any = None) -> Pair:
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1])) if len(v) in (1, 2) else (int(v[-2]), int(v[-1]))
    return (int(v), int(v))


def _bind(func: torch._ops.OpOverload, args: tuple, kwargs: dict) -> dict[str, Any]:
    """Positional and keyword arguments of an aten call by schema name, defaults filled in."""
    bound: dict[str, Any] = {}
    for i, arg in enumerate(func._schema.arguments):
        if i < len(args):
            bound[arg.name] = args[i]
        elif arg.name in kwargs:
            bound[arg.name] = kwargs[arg.name]
        elif arg.has_default_value():
            bound[arg.name] = arg.default_value
    return bound


_aten = torch.ops.aten
_POOLS = {_aten.max_pool2d_with_indices.default, _aten.max_pool2d.default, _aten.avg_pool2d.default}
_ADAPTIVE_POOLS = {_aten._adaptive_avg_pool2d.default, _aten.adaptive_max_pool2d.default}
_PADS = {_aten.constant_pad_nd.default, _aten.reflection_pad2d.default, _aten.replication_pad2d.default}


class _FieldMode(TorchDispatchMode):
    """Follows every tensor computed from the input through the aten operations that really run,
    attaching a ``_Field`` to each. Convolutions and pooling grow the field; slicing with a step
    strides it; operations that combine several tensors (add, cat, mul...) take the largest field
    among their inputs, so branches and shortcuts give the longest path. Operations that mix all
    positions of a map (global pooling, mean over H and W, flatten before a linear layer) give a
    field that covers the whole map.

    It also adds up the bytes of every new floating-point tensor computed from the input (views and
    in-place results share memory and are not counted): the activation memory of one forward pass.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fields: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self.activation_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not isinstance(func, torch._ops.OpOverload):
            return out
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor) and t in self.fields]
        if not inputs:
            return out
        try:
            self._propagate(func, args, kwargs, inputs, out)
        except Exception:  # noqa: BLE001 - never let the bookkeeping break a forward pass
            pass
        return out

    def _propagate(self, func, args, kwargs, inputs: list[torch.Tensor], out: Any) -> None:
        outs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        returns = func._schema.returns
        for i, t in enumerate(outs):
            aliased = i < len(returns) and returns[i].alias_info is not None
            if not aliased and t.is_floating_point():
                self.activation_bytes += t.numel() * t.element_size()

        x = inputs[0]
        f = self.fields[x]
        special: _Field | None = None
        if func is _aten.convolution.default:
            a = _bind(func, args, kwargs)
            x, w = a["input"], a["weight"]
            if x in self.fields and w.dim() == 4:
                f = self.fields[x]
                kernel = (int(w.shape[2]), int(w.shape[3]))
                stride, padding, dilation = _pair(a["stride"]), _pair(a["padding"]), _pair(a["dilation"])
                if a["transposed"]:
                    # Each output position sees about ceil(extent / stride) input positions.
                    ext = [dilation[i] * (kernel[i] - 1) + 1 for i in range(2)]
                    special = _Field(
                        _tidy2([f.rf[i] + (math.ceil(ext[i] / stride[i]) - 1) * f.jump[i] for i in range(2)]),
                        _tidy2([f.jump[i] / stride[i] for i in range(2)]),
                        f.start,
                    )
                else:
                    special = f.windowed(kernel, stride, padding, dilation)
        elif func in _POOLS:
            a = _bind(func, args, kwargs)
            kernel = _pair(a["kernel_size"])
            stride, padding, dilation = _pair(a["stride"], kernel), _pair(a["padding"]), _pair(a.get("dilation", 1))
            special = f.windowed(kernel, stride, padding, dilation)
        elif func in _ADAPTIVE_POOLS and _spatial(x) is not None:
            special = self._adaptive(f, _spatial(x), _pair(args[1]))
        elif func in _PADS and _spatial(x) is not None:
            pad = list(args[1]) + [0, 0, 0, 0]
            # pad = [left, right, top, bottom]: the first position moves up and left.
            start = [f.start[0] - pad[2] * f.jump[0], f.start[1] - pad[0] * f.jump[1]]
            special = _Field(f.rf, f.jump, _tidy2(start))
        elif func is _aten.slice.Tensor and _spatial(x) is not None:
            a = _bind(func, args, kwargs)
            dim = a["dim"] % x.dim()
            if dim >= x.dim() - 2:
                axis = dim - (x.dim() - 2)
                size = x.shape[dim]
                begin = a["start"] or 0
                begin = max(0, begin + size) if begin < 0 else min(begin, size)
                step = a["step"] or 1
                jump, start = list(f.jump), list(f.start)
                start[axis] = start[axis] + begin * jump[axis]
                jump[axis] = jump[axis] * step
                special = _Field(f.rf, _tidy2(jump), _tidy2(start))
            else:
                special = f

        for t in outs:
            self.fields[t] = special if special is not None else self._combine(inputs, t)

    @staticmethod
    def _adaptive(f: _Field, size_in: Pair, size_out: Pair) -> _Field:
        rf, jump, start = [], [], []
        for a in range(2):
            n, o = size_in[a], size_out[a]
            if n % o == 0:
                k = s = n // o
            else:  # windows [floor(i n / o), ceil((i + 1) n / o)) of unequal sizes: the largest counts
                k = max(math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o))
                s = n / o
            rf.append(f.rf[a] + (k - 1) * f.jump[a])
            jump.append(f.jump[a] * s)
            start.append(f.start[a] + (k - 1) / 2 * f.jump[a])
        return _Field(_tidy2(rf), _tidy2(jump), _tidy2(start))

    def _combine(self, inputs: list[torch.Tensor], out: torch.Tensor) -> _Field:
        # The field is the largest among the inputs; the positions (jump, start) are those of an
        # input laid out like the output: in ``x * gate`` (squeeze-excitation) the gate's field
        # is global, but the positions are x's.
        out_size = _spatial(out)
        candidates: list[tuple[int, _Field]] = []  # (2: same positions, 1: resampled, 0: none)
        for t in inputs:
            f, size = self.fields[t], _spatial(t)
            if size is None:
                candidates.append((0, f))
            elif size == out_size:
                candidates.append((2, f))
            elif out_size is None or out_size == (1, 1):
                candidates.append((0, f.whole(size)))
            else:
                candidates.append((1, f.resampled(size, out_size)))
        rf = _tidy2([max(c[1].rf[a] for c in candidates) for a in range(2)])
        best = max(rank for rank, _ in candidates)
        ref = max((g for rank, g in candidates if rank == best), key=lambda g: g.rf[0] * g.rf[1])
        return _Field(rf, ref.jump, ref.start)


# --------------------------------------------------------------------------------------------------
# One instrumented forward pass, shared by summary() and receptive_field()


@dataclass
class _Call:
    name: str
    module: nn.Module
    depth: int
    flops_before: int
    macs: int = 0
    output_shapes: tuple[tuple[int, ...], ...] = ()
    field: _Field | None = None
    repeated: bool = False
    done: bool = False


@dataclass
class _Trace:
    calls: list[_Call]
    total_macs: int
    activation_bytes: int
    output_shapes: tuple[tuple[int, ...], ...]
    input_size: tuple[int, ...]


def _resolve_input_size(model: nn.Module, input_size: Sequence[int] | None) -> tuple[int, ...]:
    if input_size is None:
        cfg = getattr(model, "default_cfg", None)
        if not cfg or "input_size" not in cfg:
            raise ValueError("input_size is required for a model without default_cfg, e.g. (3, 224, 224)")
        input_size = cfg["input_size"]
    size = tuple(int(v) for v in input_size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input_size must be (C, H, W) with positive sizes, got {tuple(input_size)}")
    return size


def _example_input(model: nn.Module, input_size: tuple[int, ...]) -> torch.Tensor:
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    if ref is None:
        ref = next((b for b in model.buffers() if b.is_floating_point()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    return torch.zeros((1, *input_size), device=device, dtype=dtype)


class _EvalMode:
    """Puts every module in eval mode (batch norm on running statistics, no dropout, no auxiliary
    heads) and gives each its own previous mode back afterwards."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.saved: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> None:
        self.saved = [(m, m.training) for m in self.model.modules()]
        self.model.eval()

    def __exit__(self, *exc: Any) -> None:
        for m, training in self.saved:
            m.training = training


def _shapes(obj: Any) -> tuple[tuple[int, ...], ...]:
    # Per image: the batch dimension (always 1 here) is left out.
    return tuple(tuple(int(s) for s in t.shape[1:]) for t in tree_leaves(obj) if isinstance(t, torch.Tensor))


def _trace(model: nn.Module, input_size: Sequence[int] | None) -> _Trace:
    size = _resolve_input_size(model, input_size)
    x = _example_input(model, size)
    calls: list[_Call] = []
    stack: list[_Call] = []
    seen: set[int] = set()
    # The root is a row only when it is itself a single layer.
    names = {id(m): n for n, m in model.named_modules() if n or not list(model.children())}
    depths = {i: (n.count(".") + 1 if n else 0) for i, n in names.items()}
    counter = FlopCounterMode(display=False)
    fields = _FieldMode()

    def pre_hook(module: nn.Module, args: Any) -> None:
        key = id(module)
        call = _Call(names[key], module, depths[key], counter.get_total_flops(), repeated=key in seen)
        seen.add(id(module))
        calls.append(call)
        stack.append(call)

    def post_hook(module: nn.Module, args: Any, output: Any) -> None:
        for i in range(len(stack) - 1, -1, -1):
            if stack[i].module is module:
                call = stack.pop(i)
                break
        else:  # a hook registered by us always has its pre-hook; be safe anyway
            return
        call.macs = (counter.get_total_flops() - call.flops_before) // 2
        call.output_shapes = _shapes(output)
        outs = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor) and t in fields.fields]
        call.field = fields.fields[outs[0]] if outs else None
        call.done = True

    handles = []
    try:
        for m in model.modules():
            if id(m) in names:
                handles.append(m.register_forward_pre_hook(pre_hook))
                handles.append(m.register_forward_hook(post_hook))
        with _EvalMode(model), torch.no_grad(), counter, fields:
            fields.fields[x] = _Field((1, 1), (1, 1), (0, 0))
            out = model(x)
    finally:
        for h in handles:
            h.remove()
    return _Trace(
        calls=[c for c in calls if c.done],
        total_macs=counter.get_total_flops() // 2,
        activation_bytes=fields.activation_bytes,
        output_shapes=_shapes(out),
        input_size=size,
    )


# --------------------------------------------------------------------------------------------------
# Public API: MACs, receptive fields, summary


def count_macs(model: nn.Module, input_size: Sequence[int] | None = None) -> int:
    """Multiply-accumulate operations of convolutions and linear layers for one image of
    ``input_size`` = (C, H, W) (default: the model's ``default_cfg["input_size"]``), counted by
    ``FlopCounterMode`` in eval mode (FLOPs / 2)."""
    size = _resolve_input_size(model, input_size)
    x = _example_input(model, size)
    counter = FlopCounterMode(display=False)
    with _EvalMode(model), torch.no_grad(), counter:
        model(x)
    return counter.get_total_flops() // 2


@dataclass
class LayerField:
    """Receptive field at the output of one leaf-module call. ``rf``, ``jump`` and ``start`` are
    (height, width): the input region one output position sees, the input distance between
    neighbouring positions (the effective stride), and the centre of the first position's region in
    input pixel coordinates."""

    name: str
    type: str
    output_shape: tuple[int, ...]
    rf: tuple[Number, Number]
    jump: tuple[Number, Number]
    start: tuple[Number, Number]


def receptive_field(
    model: nn.Module, input_size: Sequence[int] | None = None, leaves_only: bool = True
) -> list[LayerField]:
    """Receptive field and jump after every leaf-module call (in execution order), for an input of
    ``input_size`` = (C, H, W). With ``leaves_only=False`` the calls of containers are listed too
    (each before its children): the output of an Inception module or a residual block is the output
    of its concatenation or addition, which no leaf module produces.

    The field is propagated through the operations that actually run, so it follows the real graph:
    at a concatenation or an addition of branches the largest field wins (the longest path), strided
    convolutions and pooling multiply the jump, and a global pooling or a flatten before a linear
    layer covers the whole map. Fields are not clipped to the image: a field larger than the input
    partly lies in the padding.
    """
    rows = []
    for c in _trace(model, input_size).calls:
        if (leaves_only and list(c.module.children())) or c.field is None:
            continue
        shape = c.output_shapes[0] if c.output_shapes else ()
        rows.append(LayerField(c.name, type(c.module).__name__, shape, c.field.rf, c.field.jump, c.field.start))
    return rows


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
        padding = m.padding if isinstance(m.padding, str) else _pair(m.padding)
        return dict(
            kernel=_pair(m.kernel_size), stride=_pair(m.stride), padding=padding, dilation=_pair(m.dilation), groups=m.groups
        )
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.AvgPool1d, nn.AvgPool2d, nn.LPPool2d)):
        kernel = _pair(m.kernel_size)
        return dict(
            kernel=kernel,
            stride=_pair(m.stride, kernel),
            padding=_pair(getattr(m, "padding", 0)),
            dilation=_pair(getattr(m, "dilation", 1)),
            ceil_mode=bool(getattr(m, "ceil_mode", False)),
        )
    return {}


def summary(model: nn.Module, input_size: Sequence[int] | None = None, depth: int | None = 3) -> ModelSummary:
    """Per-layer table of ``model`` for one image of ``input_size`` = (C, H, W) (default: the
    model's ``default_cfg["input_size"]``).

    Rows are module calls in execution order, down to ``depth`` levels of nesting (1: the model's
    direct children; ``None``: every level). A row that stands for a folded subtree carries the
    subtree's parameters and MACs. Totals always cover the whole model: parameters (and trainable
    ones) from ``model.parameters()``, MACs of everything that ran, and the activation memory: bytes
    of all floating-point tensors computed from the input in one forward pass (views and in-place
    results not counted twice), i.e. about what a training step keeps for backward, per image.
    """
    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth must be an integer >= 0 or None, got {depth!r}")
    tr = _trace(model, input_size)
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
                **_geometry(c.module),
            )
        )
    params = list(model.parameters())
    cfg = getattr(model, "default_cfg", None) or {}
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


# --------------------------------------------------------------------------------------------------
# Formatting


def _human(n: Number, unit: str = "") -> str:
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.2f} {suffix}{unit}".rstrip()
    return f"{n:g} {unit}".rstrip()


def _human_bytes(n: int) -> str:
    for div, suffix in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n >= div:
            return f"{n / div:.2f} {suffix}"
    return f"{n} B"


def _fmt_pair(p: Any) -> str:
    if p is None:
        return ""
    if isinstance(p, str):
        return p
    a, b = (_fmt_num(v) for v in p)
    return a if a == b else f"{a}x{b}"


def _fmt_num(v: Number) -> str:
    return str(v) if isinstance(v, int) else f"{v:.3g}"


def _fmt_shape(s: Any) -> str:
    if s and isinstance(s[0], tuple):
        return ", ".join(_fmt_shape(x) for x in s)
    return "x".join(str(v) for v in s) if s else "scalar"


def _table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = [r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i]) for i in range(len(r))]
        return "  ".join(cells).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    return [line(header), rule, *(line(r) for r in rows), rule]


def format_summary(result: ModelSummary) -> str:
    """An aligned text table of a summary, then the totals."""
    header = ["Layer", "Type", "Kernel", "Stride", "Pad", "Groups", "Output", "Params", "MACs", "RF", "Jump"]
    rows = []
    for r in result.layers:
        kernel = _fmt_pair(r.kernel)
        if kernel and r.dilation and r.dilation != (1, 1):
            kernel += f" d{_fmt_pair(r.dilation)}"
        rows.append(
            [
                "  " * max(r.depth - 1, 0) + r.name,
                r.type,
                kernel,
                _fmt_pair(r.stride),
                _fmt_pair(r.padding) + (" ceil" if r.ceil_mode else ""),
                str(r.groups) if r.groups not in (None, 1) else "",
                _fmt_shape(r.output_shape),
                ("(shared) " if r.repeated and r.params else "") + f"{r.params:,}",
                _human(r.macs) if r.macs else "0",
                _fmt_pair(r.rf) if r.rf else "-",
                _fmt_pair(r.jump) if r.jump else "-",
            ]
        )
    depth = "all levels" if result.depth is None else f"depth {result.depth}"
    lines = [f"{result.model}: input {_fmt_shape(result.input_size)} (one image), {depth}"]
    lines += _table(header, rows, right={3, 4, 5, 7, 8, 9, 10})
    lines += [
        f"Total params:         {result.total_params:,}",
        f"Trainable params:     {result.trainable_params:,}",
        f"Non-trainable params: {result.total_params - result.trainable_params:,}",
        f"MACs:                 {result.total_macs:,} ({_human(result.total_macs, 'MACs')}, conv + linear)",
        f"Activation memory:    {_human_bytes(result.activation_bytes)} per image",
        f"Parameter memory:     {_human_bytes(result.param_bytes)}",
        f"Output:               {_fmt_shape(result.output_shape)}",
        "RF: receptive field (input pixels one output position sees); Jump: input pixels between "
        "neighbouring output positions (product of the strides); after a global pooling or a "
        "flatten, the field of the whole map.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Factorised convolutions


@dataclass
class FactorOption:
    """One way of covering a k x k receptive field. ``layers`` lists (kh, kw, c_in, c_out, out_h,
    out_w) for each convolution (stride 1, no padding); the ratios compare with the k x k."""

    name: str
    layers: list[tuple[int, int, int, int, int, int]]
    receptive_field: Pair
    output_size: Pair
    weights: int
    params: int
    macs: int
    nonlinearities: int
    weight_ratio: Fraction
    param_ratio: float
    mac_ratio: float


@dataclass
class FactorizeResult:
    kernel: int
    channels_in: int
    channels_out: int
    size: int
    bias: bool
    options: list[FactorOption]


def _option(name: str, layers: list[tuple[int, int, int, int]], size: int, bias: bool) -> dict[str, Any]:
    h = w = size
    rf_h = rf_w = 1
    weights = biases = macs = 0
    rows = []
    for kh, kw, cin, cout in layers:
        h, w = conv_output_size(h, kh), conv_output_size(w, kw)
        rf_h, rf_w = rf_h + kh - 1, rf_w + kw - 1
        weights += cin * cout * kh * kw
        biases += cout if bias else 0
        macs += cin * cout * kh * kw * h * w
        rows.append((kh, kw, cin, cout, h, w))
    return dict(name=name, layers=rows, receptive_field=(rf_h, rf_w), output_size=(h, w), weights=weights,
                params=weights + biases, macs=macs, nonlinearities=len(layers))


def factorize(
    kernel: int, channels_in: int, channels_out: int | None = None, size: int = 32, bias: bool = True
) -> FactorizeResult:
    """Compare one ``kernel`` x ``kernel`` convolution with the two factorisations of the same
    receptive field:

    - a stack of (k - 1) / 2 3 x 3 convolutions (Simonyan & Zisserman 2014: two 3x3 see 5x5, three
      see 7x7), the first ``channels_in -> channels_out``, the others ``channels_out -> channels_out``;
    - a 1 x k followed by a k x 1 convolution (Szegedy et al. 2016, Inception v3), likewise.

    Every convolution has stride 1, no padding and (with ``bias``) a bias, and is followed by a
    non-linearity; ``size`` is the input's height and width (32 -> 28 for 5x5 or two 3x3). With
    ``channels_in == channels_out`` the weight ratios are 9 (k-1)/2 / k^2 (18/25 for k = 5, 27/49 for
    k = 7) and 2/k. The MAC ratios differ a little from the weight ratios because without padding
    the first layers of a stack work on larger maps; with "same" padding they would be equal.
    """
    channels_out = channels_in if channels_out is None else channels_out
    checks = (("kernel", kernel, 3), ("channels_in", channels_in, 1), ("channels_out", channels_out, 1))
    for arg, value, low in checks:
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
    if kernel % 2 == 0:
        raise ValueError(f"kernel must be odd (a stack of 3x3 convolutions covers 3, 5, 7, ...), got {kernel}")
    if not isinstance(size, int) or size < kernel:
        raise ValueError(f"size must be an integer >= kernel ({kernel}), got {size!r}")
    k, ci, co, m = kernel, channels_in, channels_out, (kernel - 1) // 2
    specs = [
        (f"{k}x{k}", [(k, k, ci, co)]),
        (f"{m} x 3x3" if m > 1 else "3x3", [(3, 3, ci if i == 0 else co, co) for i in range(m)]),
        (f"1x{k} + {k}x1", [(1, k, ci, co), (k, 1, co, co)]),
    ]
    raw = [_option(name, layers, size, bias) for name, layers in specs]
    base = raw[0]
    options = [
        FactorOption(
            **r,
            weight_ratio=Fraction(r["weights"], base["weights"]),
            param_ratio=r["params"] / base["params"],
            mac_ratio=r["macs"] / base["macs"],
        )
        for r in raw
    ]
    return FactorizeResult(kernel, ci, co, size, bias, options)


def factorize_to_json(result: FactorizeResult) -> dict[str, Any]:
    opts = []
    for o in result.options:
        opts.append(
            dict(
                name=o.name,
                layers=[
                    dict(kernel=[kh, kw], channels_in=ci, channels_out=co, output=[h, w])
                    for kh, kw, ci, co, h, w in o.layers
                ],
                receptive_field=list(o.receptive_field), output_size=list(o.output_size), weights=o.weights,
                params=o.params, macs=o.macs, nonlinearities=o.nonlinearities,
                weight_ratio=float(o.weight_ratio), weight_ratio_fraction=str(o.weight_ratio),
                param_ratio=o.param_ratio, mac_ratio=o.mac_ratio,
            )
        )
    return dict(kernel=result.kernel, channels_in=result.channels_in, channels_out=result.channels_out,
                size=result.size, bias=result.bias, options=opts)


def format_factorize(result: FactorizeResult) -> str:
    header = ["Option", "Layers", "RF", "Output", "Weights", "Params", "MACs", "Non-lin.", "Weights/kxk", "MACs/kxk"]
    rows = []
    for o in result.options:
        layers = " -> ".join(f"{kh}x{kw}" for kh, kw, *_ in o.layers)
        frac = f"{float(o.weight_ratio):.3f} ({o.weight_ratio})" if o.weight_ratio != 1 else "1"
        rows.append([
            o.name, layers, _fmt_pair(o.receptive_field), _fmt_pair(o.output_size), f"{o.weights:,}", f"{o.params:,}",
            f"{o.macs:,}", str(o.nonlinearities), frac, f"{o.mac_ratio:.3f}",
        ])
    bias = "with biases" if result.bias else "without biases"
    lines = [
        f"Receptive field {result.kernel}x{result.kernel}: {result.channels_in} -> {result.channels_out} channels, "
        f"input {result.size}x{result.size}, stride 1, no padding, {bias}"
    ]
    lines += _table(header, rows, right={2, 3, 4, 5, 6, 7, 8, 9})
    lines.append("Weights/kxk is exact (without biases); each convolution is followed by one non-linearity.")
    return "\n".join(lines)


def plot_factorize(result: FactorizeResult, path: str | Path) -> Path:
    """Bar chart (PNG) of parameters and MACs relative to the k x k convolution, and the number of
    non-linearities, for each option. Uses matplotlib's Agg canvas (no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    names = [o.name for o in result.options]
    fig = Figure(figsize=(9, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2, width_ratios=[2, 1])
    xs = range(len(names))
    width = 0.38
    b1 = ax1.bar([x - width / 2 for x in xs], [o.param_ratio for o in result.options], width, label="parameters")
    b2 = ax1.bar([x + width / 2 for x in xs], [o.mac_ratio for o in result.options], width, label="MACs")
    ax1.bar_label(b1, fmt="%.2f", fontsize=8)
    ax1.bar_label(b2, fmt="%.2f", fontsize=8)
    ax1.set_xticks(list(xs), names)
    ax1.set_ylabel(f"relative to one {result.kernel}x{result.kernel}")
    ax1.set_ylim(0, 1.2)
    ax1.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax1.legend(loc="upper right", fontsize=8)
    title = f"Cost, {result.channels_in}->{result.channels_out} channels, {result.size}x{result.size} input"
    ax1.set_title(title, fontsize=10)
    b3 = ax2.bar(list(xs), [o.nonlinearities for o in result.options], color="tab:green")
    ax2.bar_label(b3, fontsize=8)
    ax2.set_xticks(list(xs), names, fontsize=8)
    ax2.set_title("Non-linearities", fontsize=10)
    ax2.set_ylim(0, max(o.nonlinearities for o in result.options) + 1)
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path
