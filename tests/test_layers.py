import pytest
import torch
from torch import nn

from cnnzoo.bench import op_trace
from cnnzoo.layers import AvgPool2d, MaxPool2d, pool_in_input_layout

POOLS = [
    (MaxPool2d(3, 2, 1), nn.MaxPool2d(3, 2, 1)),                                  # ResNet's stem
    (MaxPool2d(2, 2), nn.MaxPool2d(2, 2)),                                        # VGG
    (MaxPool2d(3, 1, 1, ceil_mode=True), nn.MaxPool2d(3, 1, 1, ceil_mode=True)),  # GoogLeNet's branch
    (AvgPool2d(3, 1, 1), nn.AvgPool2d(3, 1, 1)),                                  # Inception v3's branch
]


@pytest.mark.parametrize("ours,torchs", POOLS, ids=lambda p: repr(p))
def test_pools_equal_torchs_bit_for_bit(ours, torchs):
    x = torch.randn(2, 24, 15, 15)
    x[0, 0, :4, :4] = 1.0  # ties inside a window: both kernels must pick the same one
    x[1, 3, 5, 5] = float("nan")
    with torch.inference_mode():
        a, b = ours(x), torchs(x)
    assert a.is_contiguous() and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
    # training pools as torch's layer does: same values and gradients, nothing else runs
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn_like(b)
    ours(xa).backward(g)
    torchs(xb).backward(g)
    assert torch.equal(xa.grad.nan_to_num(7.0), xb.grad.nan_to_num(7.0)) and xa.grad.is_contiguous()


def test_pool_takes_the_channels_last_kernel_only_in_cpu_inference():
    pool, x = MaxPool2d(3, 2, 1), torch.randn(2, 16, 12, 12)
    layouts = lambda ops: {layout for op, layout in ops if op.startswith("aten.max_pool2d")}
    with torch.inference_mode():
        assert torch.equal(pool(x), nn.functional.max_pool2d(x, 3, 2, 1))
    cl_strides = x.contiguous(memory_format=torch.channels_last).stride()
    inferred = op_trace(pool, x, "infer")
    assert [st for _, st in layouts(inferred).pop()[0]] == list(cl_strides)
    with pool_in_input_layout():
        assert [st for _, st in layouts(op_trace(pool, x, "infer")).pop()[0]] == list(x.stride())
    # an input already channels-last is pooled as it is, with no copies
    xc = x.contiguous(memory_format=torch.channels_last)
    assert {op for op, _ in op_trace(pool, xc, "infer")} == {"aten.max_pool2d"}
