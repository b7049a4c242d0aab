"""Layer geometry: PyTorch's output-size rule for convolutions and pooling."""
from __future__ import annotations

from typing import Any

Pair = tuple[int, int]
Number = int | float


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


def as_pair(v: Any, default: Any = None) -> Pair:
    """(height, width) from an int or a 1-, 2- or longer sequence (the last two), as layers and
    aten schemas spell kernel sizes, strides and paddings; ``default`` when ``v`` is empty."""
    if v is None or (isinstance(v, (list, tuple)) and len(v) == 0):
        v = default
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[-1])) if len(v) in (1, 2) else (int(v[-2]), int(v[-1]))
    return (int(v), int(v))
