"""Building blocks shared by several model families, each defined once.

- ``ConvBnAct``: convolution -> batch norm -> activation, the unit of every post-2015 network.
- ``SqueezeExcite``: SENet's channel attention (Hu et al. 2017), used by SE-ResNet/SE-ResNeXt.
- ``DepthwiseSeparableConv``: MobileNet v1's factorisation of a 3x3 convolution into a per-channel
  3x3 (depthwise) and a 1x1 (pointwise) convolution.
- ``Concat``: parallel branches whose outputs are concatenated along channels (Inception modules).
- ``MaxPool2d``, ``AvgPool2d``: torch's pooling layers, run in channels-last layout on the CPU where faster.
- ``GlobalPool2d``: the classifier head's global pooling ("avg", "max", "avgmax" or none).
- ``DropPath``: stochastic depth (Huang et al. 2016) on a residual branch.
- ``is_tracing``: whether a graph capture (FX, TorchScript, dynamo, torch.export) is running.
- ``init_weights``: the initialisation every family uses.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn.modules.utils import _pair

ActLayer = Callable[..., nn.Module]


def is_tracing() -> bool:
    """True while FX, TorchScript, dynamo or torch.export records a graph: code that branches on a
    tensor's values, layout or flags must then take the one path the graph can keep."""
    return (torch.fx._symbolic_trace.is_fx_symbolic_tracing() or torch.jit.is_tracing() or torch.compiler.is_compiling()
            or torch.compiler.is_exporting())


class ConvBnAct(nn.Module):
    """Conv2d (no bias: the batch norm's shift replaces it) -> BatchNorm2d -> activation.

    ``padding=None`` means "same" padding for odd kernels at stride 1 (``k // 2`` per side).
    ``act=None`` leaves the activation out (e.g. MobileNet v2's linear bottleneck).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | None = None,
        groups: int = 1,
        act: ActLayer | None = nn.ReLU,
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if padding is None:
            ks = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
            padding = (ks[0] // 2, ks[1] // 2)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=bn_eps)
        self.act = act(inplace=True) if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    """Squeeze (global average pool) -> excite (two 1x1 convs, ReLU, sigmoid) -> rescale channels.

    ``reduction`` is the paper's r (16); the bottleneck width is ``channels // reduction``.
    """

    def __init__(self, channels: int, reduction: int = 16, rd_channels: int | None = None) -> None:
        super().__init__()
        rd = rd_channels or max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, rd, 1, bias=True)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * torch.sigmoid(s)


class DepthwiseSeparableConv(nn.Module):
    """A depthwise 3x3 ConvBnAct (groups = channels) followed by a pointwise 1x1 ConvBnAct.

    Costs ``C_in*9 + C_in*C_out`` weights against ``C_in*C_out*9`` for a full 3x3 convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, act: ActLayer = nn.ReLU) -> None:
        super().__init__()
        self.conv_dw = ConvBnAct(in_channels, in_channels, 3, stride, groups=in_channels, act=act)
        self.conv_pw = ConvBnAct(in_channels, out_channels, 1, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_pw(self.conv_dw(x))


class Concat(nn.ModuleDict):
    """Runs every branch on the same input and concatenates the outputs along channels,
    in the order the branches were given (the order a weight file's concat expects)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return torch.cat([branch(x) for branch in self.values()], dim=1)


# On the CPU, torch's pooling kernels vectorise across channels only in channels-last layout, so the
# pools convert, pool and convert back (same values, bit for bit). Training max pools use that kernel
# forwards only, with the NCHW backward fed its argmax indices (the channels-last backward is slower),
# and not on planes over 128x128, where the copies cost what the pool saves (BENCHMARKS.md, "Pooling").
_channels_last_pooling = True
_MAX_TRAINING_PLANE = 128 * 128


@contextlib.contextmanager
def pool_in_input_layout() -> Iterator[None]:
    """Within this block, ``MaxPool2d`` and ``AvgPool2d`` pool in their input's layout, exactly as
    torch's layers do (``cnnzoo.studies.bench.compare_ops`` uses it to tell this choice from the rest)."""
    global _channels_last_pooling
    saved, _channels_last_pooling = _channels_last_pooling, False
    try:
        yield
    finally:
        _channels_last_pooling = saved


def _may_pool_channels_last(x: torch.Tensor) -> bool:
    # the meta device stands in for the CPU in operator traces (cnnzoo.studies.bench.op_trace). Checked
    # first: under FX the tensor is a proxy whose properties cannot decide a branch.
    if is_tracing():
        return False
    return _channels_last_pooling and x.dim() == 4 and x.device.type in ("cpu", "meta") and x.is_contiguous()


def _training(x: torch.Tensor) -> bool:
    return x.requires_grad and torch.is_grad_enabled()


class _MaxPoolForwardChannelsLast(torch.autograd.Function):
    """Max pooling whose forward runs in channels-last layout and whose backward is the NCHW kernel's,
    fed with the forward's argmax indices: values and gradients are those of ``F.max_pool2d``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel_size: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
                dilation: tuple[int, int], ceil_mode: bool) -> torch.Tensor:
        out, indices = torch.ops.aten.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), kernel_size, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(x, indices.contiguous())
        ctx.args = (kernel_size, stride, padding, dilation, ceil_mode)
        return _nchw(out)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, indices = ctx.saved_tensors
        grad_x = torch.ops.aten.max_pool2d_with_indices_backward(grad_out, x, *ctx.args, indices)
        return grad_x, None, None, None, None, None


def _nchw(x: torch.Tensor) -> torch.Tensor:
    # A clone, not .contiguous(): a map of 1x1 pixels counts as contiguous in both layouts and would
    # keep its channels-last strides, which steer the next convolution to another kernel (other
    # rounding) than the one torch's pooling layers lead to.
    return x.clone(memory_format=torch.contiguous_format)


def _via_channels_last(pool: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return _nchw(pool(x.contiguous(memory_format=torch.channels_last)))


class MaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d``; on the CPU it pools in channels-last layout (same values and gradients, faster)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.return_indices or not _may_pool_channels_last(x):
            return super().forward(x)
        if _training(x):
            if x.shape[-2] * x.shape[-1] > _MAX_TRAINING_PLANE:
                return super().forward(x)
            return _MaxPoolForwardChannelsLast.apply(x, _pair(self.kernel_size), _pair(self.stride), _pair(self.padding),
                                                     _pair(self.dilation), self.ceil_mode)
        return _via_channels_last(super().forward, x)


class AvgPool2d(nn.AvgPool2d):
    """``nn.AvgPool2d``; in CPU inference it pools in channels-last layout (same values, faster)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _may_pool_channels_last(x) or _training(x):
            return super().forward(x)
        return _via_channels_last(super().forward, x)


POOL_TYPES = ("avg", "max", "avgmax", "")


class GlobalPool2d(nn.Module):
    """Pools each channel of an (N, C, H, W) map to one value and flattens to (N, C): "avg", "max",
    or "avgmax" (the mean of the two, so the width stays C). ``""`` leaves the map as it is."""

    def __init__(self, pool_type: str = "avg") -> None:
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(f"global_pool must be one of {POOL_TYPES}, got {pool_type!r}")
        self.pool_type = pool_type
        self.avg = nn.AdaptiveAvgPool2d(1) if pool_type in ("avg", "avgmax") else None
        self.max = nn.AdaptiveMaxPool2d(1) if pool_type in ("max", "avgmax") else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.avg is not None and self.max is not None:
            x = 0.5 * (self.avg(x) + self.max(x))
        elif self.avg is not None:
            x = self.avg(x)
        elif self.max is not None:
            x = self.max(x)
        else:
            return x
        return torch.flatten(x, 1)

    def extra_repr(self) -> str:
        return repr(self.pool_type)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, zero a residual branch for a random
    ``drop_prob`` of the samples in the batch and scale the others by 1 / (1 - drop_prob), so the
    expected output is unchanged; in eval mode the identity. Takes (N, C, H, W) branches."""

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop path rate must be in [0, 1), got {drop_prob!r}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0], 1, 1, 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


def scale_widths(widths: tuple[int, ...], width_mult: float) -> tuple[int, ...]:
    """Each width times ``width_mult``, rounded to the nearest channel (at least 1): a plain width
    multiplier, for the networks whose papers set no rounding rule of their own."""
    if width_mult <= 0:
        raise ValueError(f"width_mult must be > 0, got {width_mult}")
    return tuple(max(1, round(c * width_mult)) for c in widths)


def drop_path_rates(rate: float, num_blocks: int) -> list[float]:
    """Per-block drop rates rising linearly from 0 (first block) to ``rate`` (last), as in Huang et
    al.'s linear decay rule: early blocks compute features every later block needs."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop_path_rate must be in [0, 1), got {rate!r}")
    return [rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]


def init_weights(model: nn.Module, linear_std: float | None = 0.01) -> None:
    """He et al.'s initialisation ("Delving deep", 2015) for convolutions: zero-mean Gaussian with
    variance 2/n, n = k*k*out_channels (fan-out); batch norm as the identity; linear layers
    N(0, linear_std^2) as AlexNet and VGG initialise them (``None`` keeps PyTorch's default).
    All biases start at zero."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
