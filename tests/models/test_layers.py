import pytest
import torch
from torch import nn

from cnnzoo.models.layers import AvgPool2d, MaxPool2d, pool_in_input_layout
from cnnzoo.studies.bench import op_trace

POOLS = [
    (MaxPool2d(3, 2, 1), nn.MaxPool2d(3, 2, 1)),                                  # ResNet's stem
    (MaxPool2d(2, 2), nn.MaxPool2d(2, 2)),                                        # VGG
    (MaxPool2d(3, 1, 1, ceil_mode=True), nn.MaxPool2d(3, 1, 1, ceil_mode=True)),  # GoogLeNet's branch
    (AvgPool2d(3, 1, 1), nn.AvgPool2d(3, 1, 1)),                                  # Inception v3's branch
    (MaxPool2d(3, 2, dilation=2, ceil_mode=True), nn.MaxPool2d(3, 2, dilation=2, ceil_mode=True)),
    (MaxPool2d(3), nn.MaxPool2d(3)),                                              # stride: the kernel's
]


@pytest.mark.parametrize("ours,torchs", POOLS, ids=lambda p: repr(p))
def test_pools_equal_torchs_bit_for_bit(ours, torchs):
    x = torch.randn(2, 24, 15, 15)
    x[0, 0, :4, :4] = 1.0  # ties inside a window: both kernels must pick the same one
    x[1, 3, 5, 5] = float("nan")
    x[1, 5:] = x[1, 5:].relu()  # zeros tie in most windows after a ReLU
    with torch.inference_mode():
        a, b = ours(x), torchs(x)
    assert a.is_contiguous() and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
    # training pools as torch's layer does: same values and gradients, nothing else runs
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    g = torch.randn_like(b)
    ours(xa).backward(g)
    torchs(xb).backward(g)
    assert torch.equal(xa.grad.nan_to_num(7.0), xb.grad.nan_to_num(7.0)) and xa.grad.is_contiguous()


def test_pool_takes_the_channels_last_kernel_only_on_the_cpu_and_in_training_only_forward():
    pool, x = MaxPool2d(3, 2, 1), torch.randn(2, 16, 12, 12)
    layouts = lambda ops: {layout for op, layout in ops if op.startswith("aten.max_pool2d")}
    # per call of op_name, the strides of each tensor argument
    strides = lambda ops, op_name: [[[st for _, st in t] for t in layout] for op, layout in ops if op == op_name]
    with torch.inference_mode():
        assert torch.equal(pool(x), nn.functional.max_pool2d(x, 3, 2, 1))
    cl_strides = x.contiguous(memory_format=torch.channels_last).stride()
    inferred = op_trace(pool, x, "infer")
    assert [st for _, st in layouts(inferred).pop()[0]] == list(cl_strides)
    with pool_in_input_layout():
        assert [st for _, st in layouts(op_trace(pool, x, "infer")).pop()[0]] == list(x.stride())
    # training: channels-last forward, and the NCHW backward of the input as given
    train_ops = lambda inp: op_trace(nn.Sequential(pool, nn.Flatten()), inp.clone().requires_grad_(), "train")
    trained = train_ops(x)
    assert strides(trained, "aten.max_pool2d_with_indices")[0][0] == list(cl_strides)
    assert strides(trained, "aten.max_pool2d_with_indices_backward")[0][1] == list(x.stride())
    # a plane larger than 128x128 trains as given: the transposes would cost more than they save
    big = torch.randn(2, 2, 130, 130)
    assert strides(train_ops(big), "aten.max_pool2d_with_indices")[0][0] == list(big.stride())
    # an input already channels-last is pooled as it is, with no copies
    xc = x.contiguous(memory_format=torch.channels_last)
    assert {op for op, _ in op_trace(pool, xc, "infer")} == {"aten.max_pool2d"}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.trace is deprecated, the ONNX exporter still uses it
def test_traced_pools_are_torchs():
    """TorchScript tracing (the ONNX exporter's) records torch's own pooling, with no custom function."""
    pool = MaxPool2d(2, 2)
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    traced = torch.jit.trace(pool, x)
    assert "max_pool2d" in str(traced.graph) and "PythonOp" not in str(traced.graph)
    assert torch.equal(traced(x), pool(x))


@pytest.mark.parametrize("name", ["lenet5_caffe", "googlenet_cifar"])
def test_training_step_is_the_same_with_and_without_the_detour(name):
    """A whole training step, forward and backward, gives bit-identical gradients either way."""
    from cnnzoo.models.factory import create_model

    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(8, *model.pretrained_cfg["input_size"])
    y = torch.randint(0, model.pretrained_cfg["num_classes"], (8,))

    def grads() -> list[torch.Tensor]:
        torch.manual_seed(1)  # the same dropout masks
        model.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        return [p.grad.clone() for p in model.parameters()]

    with pool_in_input_layout():
        as_torch = grads()
        plain_ops = op_trace(model, x, "train")
    assert op_trace(model, x, "train") != plain_ops  # the detour did run
    assert all(torch.equal(a, b) for a, b in zip(grads(), as_torch))
