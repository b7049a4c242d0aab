"""The receptive-field tracer: one instrumented forward pass that follows every tensor computed
from the input through the aten operations that really run, carrying its receptive field along,
while ``FlopCounterMode`` counts MACs and hooks record each module call. ``summary`` and
``receptive_field`` read the same trace.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.weak import WeakTensorKeyDictionary

from cnnzoo.analysis.geometry import Number, Pair, as_pair

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
                stride, padding, dilation = as_pair(a["stride"]), as_pair(a["padding"]), as_pair(a["dilation"])
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
            kernel = as_pair(a["kernel_size"])
            stride, padding, dilation = as_pair(a["stride"], kernel), as_pair(a["padding"]), as_pair(a.get("dilation", 1))
            special = f.windowed(kernel, stride, padding, dilation)
        elif func in _ADAPTIVE_POOLS and _spatial(x) is not None:
            special = self._adaptive(f, _spatial(x), as_pair(args[1]))
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


def resolve_input_size(model: nn.Module, input_size: Sequence[int] | None) -> tuple[int, ...]:
    if input_size is None:
        cfg = getattr(model, "pretrained_cfg", None)
        if not cfg or "input_size" not in cfg:
            raise ValueError("input_size is required for a model without pretrained_cfg, e.g. (3, 224, 224)")
        input_size = cfg["input_size"]
    size = tuple(int(v) for v in input_size)
    if len(size) != 3 or min(size) < 1:
        raise ValueError(f"input_size must be (C, H, W) with positive sizes, got {tuple(input_size)}")
    return size


def example_input(model: nn.Module, input_size: tuple[int, ...]) -> torch.Tensor:
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    if ref is None:
        ref = next((b for b in model.buffers() if b.is_floating_point()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.get_default_dtype()
    return torch.zeros((1, *input_size), device=device, dtype=dtype)


class EvalMode:
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


def trace(model: nn.Module, input_size: Sequence[int] | None) -> _Trace:
    size = resolve_input_size(model, input_size)
    x = example_input(model, size)
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
        with EvalMode(model), torch.no_grad(), counter, fields:
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
    for c in trace(model, input_size).calls:
        if (leaves_only and list(c.module.children())) or c.field is None:
            continue
        shape = c.output_shapes[0] if c.output_shapes else ()
        rows.append(LayerField(c.name, type(c.module).__name__, shape, c.field.rf, c.field.jump, c.field.start))
    return rows

