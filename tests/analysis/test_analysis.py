"""cnnzoo.analysis: output sizes, receptive fields, MAC counts, summaries, factorised convolutions.

Reference numbers come from outside cnnzoo: PyTorch's own layers (output sizes), torchvision's
published operation counts (``_ops``: resnet50 4.09, vgg16 15.47, alexnet 0.714, googlenet 1.50,
inception_v3 5.71 GMACs), MobileNet v1's paper (569 M mult-adds), and the receptive fields
tabulated by Araujo, Norris & Sim 2019, "Computing receptive fields of convolutional neural
networks" (Distill): AlexNet 195, VGG-16 212, MobileNet v1 315, Inception v3 1311. Their ResNet-50
figure (483) is for the original v1 with the stride in the first 1x1 convolution; torchvision's (and
cnnzoo's) v1.5 puts the stride in the 3x3 and has 427 (hand computation in test_rf_resnet50).

The big models are built on the meta device: shapes and counts without allocating or computing.
"""
from __future__ import annotations

import json
from fractions import Fraction

import pytest
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from torch import nn

import cnnzoo
from cnnzoo.analysis import (
    conv_output_size,
    count_macs,
    factorize,
    factorize_to_json,
    format_factorize,
    format_summary,
    plot_factorize,
    receptive_field,
    summary,
    summary_to_json,
)
from cnnzoo.models.layers import Concat, SqueezeExcite


def zoo(name: str, **kwargs) -> nn.Module:
    try:
        with torch.device("meta"):
            return cnnzoo.create_model(name, **kwargs)
    except Exception:  # an initialisation that needs real tensors: build it on the CPU
        return cnnzoo.create_model(name, **kwargs)


def meta(fn, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return fn(weights=None, **kwargs)


def stage_rf(model: nn.Module, input_size) -> int:
    """The largest receptive field of any output that still has spatial positions (H, W > 1):
    the output of the last convolutional stage."""
    rows = receptive_field(model, input_size, leaves_only=False)
    return max(r.rf[0] for r in rows if len(r.output_shape) == 3 and r.output_shape[1] > 1)


# --------------------------------------------------------------------------------------------------
# Output sizes


@pytest.fixture
def one_thread():
    # Thousands of tiny ops: on a busy machine, waking a thread pool per op costs milliseconds.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_conv_output_size_matches_pytorch_grid(one_thread):
    checked = 0
    for n in range(1, 11):
        for k in range(1, 6):
            for s in range(1, 4):
                for p in range(0, 3):
                    for d in (1, 2):
                        x = torch.zeros(1, 1, n, n)
                        w = torch.zeros(1, 1, k, k)
                        cases = [("conv", False, lambda: F.conv2d(x, w, stride=s, padding=p, dilation=d))]
                        for ceil in (False, True):
                            cases.append(("max", ceil, lambda c=ceil: F.max_pool2d(x, k, s, p, d, ceil_mode=c)))
                            if d == 1:
                                cases.append(("avg", ceil, lambda c=ceil: F.avg_pool2d(x, k, s, p, ceil_mode=c)))
                        for kind, ceil, run in cases:
                            try:
                                expected = run().shape[-1]
                            except RuntimeError as exc:
                                if "pad" in str(exc) and "half" in str(exc):
                                    continue  # PyTorch refuses padding > kernel / 2 for pooling
                                with pytest.raises(ValueError):
                                    conv_output_size(n, k, s, p, d, ceil_mode=ceil)
                                continue
                            got = conv_output_size(n, k, s, p, d, ceil_mode=ceil)
                            assert got == expected, (kind, n, k, s, p, d, ceil)
                            checked += 1
    assert checked > 1500


def test_conv_output_size_examples():
    assert conv_output_size(32, 5) == 28  # the course text's 5x5 on 32x32
    assert conv_output_size(conv_output_size(32, 3), 3) == 28  # two 3x3
    assert conv_output_size(224, 7, stride=2, padding=3) == 112  # ResNet stem
    assert conv_output_size(112, 3, stride=2, padding=1) == 56  # ResNet max pool
    assert conv_output_size(7, 3, stride=1) == 5  # (n + 2p - f) / 2 + 1 would say 3: the stride divides
    assert conv_output_size(7, 3, stride=3) == 2
    assert conv_output_size(17, 3, padding="same") == 17
    assert conv_output_size(17, 3, padding="valid") == 15
    # ceil_mode: 4 + 2 - 2 + (3 - 1) = 6 -> 6 // 3 + 1 = 3 windows, but the third would start at
    # 6 >= n + p = 5, in the right padding: PyTorch drops it.
    assert conv_output_size(4, 2, stride=3, padding=1, ceil_mode=True) == 2
    assert F.max_pool2d(torch.zeros(1, 1, 4, 4), 2, 3, 1, ceil_mode=True).shape[-1] == 2
    assert conv_output_size(112, 3, stride=2, ceil_mode=True) == 56  # GoogLeNet's ceil-mode pools
    with pytest.raises(ValueError, match="too small"):
        conv_output_size(4, 5)
    with pytest.raises(ValueError):
        conv_output_size(8, 3, stride=2, padding="same")


# --------------------------------------------------------------------------------------------------
# Receptive fields


def conv(k: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(4, 4, k, stride, padding=dilation * (k // 2), dilation=dilation)


def last_rf(model: nn.Module, size: int = 32):
    r = receptive_field(model, (4, size, size), leaves_only=False)
    return r[-1].rf[0], r[-1].jump[0]


def test_rf_stacks_of_3x3():
    assert last_rf(nn.Sequential(conv(3))) == (3, 1)
    assert last_rf(nn.Sequential(conv(3), conv(3))) == (5, 1)
    assert last_rf(nn.Sequential(conv(3), nn.ReLU(), conv(3), nn.ReLU(), conv(3))) == (7, 1)
    assert last_rf(nn.Sequential(conv(5))) == (5, 1)


def test_rf_strides_pooling_dilation():
    # A stride-2 layer doubles what every later kernel adds.
    assert last_rf(nn.Sequential(conv(3, stride=2), conv(3))) == (7, 2)
    assert last_rf(nn.Sequential(conv(3), nn.MaxPool2d(2), conv(3))) == (3 + 1 + 2 * 2, 2)
    assert last_rf(nn.Sequential(conv(3), nn.AvgPool2d(3, 2, 1), conv(3))) == (3 + 2 + 2 * 2, 2)
    assert last_rf(nn.Sequential(conv(3, dilation=2))) == (5, 1)
    rows = receptive_field(nn.Sequential(conv(7, stride=2), nn.MaxPool2d(3, 2, 1)), (4, 64, 64))
    assert [(r.rf, r.jump) for r in rows] == [((7, 7), (2, 2)), ((11, 11), (4, 4))]


class TwoBranches(nn.Module):
    def __init__(self, combine: str) -> None:
        super().__init__()
        self.combine = combine
        self.long = nn.Sequential(conv(3), conv(3))
        self.short = nn.Conv2d(4, 4, 1)
        self.after = conv(3) if combine != "cat" else nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x):
        if self.combine == "add":
            y = self.long(x) + self.short(x)
        elif self.combine == "add_":
            y = self.short(x)
            y += self.long(x)
        else:
            y = torch.cat([self.short(x), self.long(x)], 1)
        return self.after(y)


@pytest.mark.parametrize("combine", ["add", "add_", "cat"])
def test_rf_branches_take_the_longest_path(combine):
    assert last_rf(TwoBranches(combine)) == (7, 1)


def test_rf_concat_block_and_asymmetric_kernels():
    block = Concat({"a": nn.Conv2d(4, 2, 1), "b": nn.Conv2d(4, 2, (1, 7), padding=(0, 3)), "c": conv(3)})
    rows = {r.name: r.rf for r in receptive_field(nn.Sequential(block), (4, 16, 16), leaves_only=False)}
    assert rows == {"0": (3, 7), "0.a": (1, 1), "0.b": (1, 7), "0.c": (3, 3)}  # concat: per-axis maximum
    pair = nn.Sequential(nn.Conv2d(4, 4, (1, 7), padding=(0, 3)), nn.Conv2d(4, 4, (7, 1), padding=(3, 0)))
    assert receptive_field(pair, (4, 16, 16))[-1].rf == (7, 7)


def test_rf_global_pooling_flatten_and_squeeze_excite():
    net = nn.Sequential(conv(3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    rows = receptive_field(net, (4, 8, 8))
    assert rows[0].rf == (3, 3) and rows[0].output_shape == (4, 4, 4)
    assert rows[1].rf == (3 + 3 * 2, 3 + 3 * 2)  # the whole 4x4 map of stride-2 positions
    assert rows[-1].rf == rows[1].rf
    flat = nn.Sequential(conv(3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    assert receptive_field(flat, (4, 6, 6))[-1].rf == (3 + 5, 3 + 5)
    # Squeeze-and-excitation gates every position with a mean over the whole map.
    se = nn.Sequential(conv(3), SqueezeExcite(4, reduction=2))
    assert last_rf(se, 10)[0] == 3 + 9


def test_rf_strided_slicing():
    # CIFAR ResNets' option-A shortcut subsamples by slicing.
    class Sub(nn.Module):
        def forward(self, x):
            return x[:, :, ::2, ::2]

    assert last_rf(nn.Sequential(conv(3), Sub(), conv(3))) == (3 + 2 * 2, 2)


def test_rf_resnet50():
    # torchvision's ResNet-50 (v1.5: stride in the 3x3): stem 7 (jump 2) -> pool 11 (jump 4);
    # each 3x3 adds 2 input jumps. A stage's strided 3x3 still sees the previous jump, so 4 of them
    # at jump 4 (layer1's three, layer2's first), 4 at 8, 6 at 16, 2 at 32. (With the stride in the
    # 1x1, ResNet v1, every 3x3 of a stage works at the stage's jump: 483.)
    expected = 11 + 2 * (4 * 4 + 4 * 8 + 6 * 16 + 2 * 32)
    assert expected == 427
    assert stage_rf(meta(tvm.resnet50), (3, 224, 224)) == 427
    assert stage_rf(zoo("resnet50"), (3, 224, 224)) == 427


def test_rf_classic_networks_torchvision():
    rows = receptive_field(meta(tvm.vgg16), (3, 224, 224))
    convs = [r for r in rows if r.type == "Conv2d"]
    pools = [r for r in rows if r.type == "MaxPool2d"]
    assert convs[1].rf == (5, 5)
    assert convs[-1].rf == (196, 196)  # conv5_3
    assert pools[-1].rf == (212, 212) and pools[-1].jump == (32, 32)  # pool5
    assert stage_rf(meta(tvm.alexnet), (3, 224, 224)) == 195
    v3 = meta(tvm.inception_v3, init_weights=False, aux_logits=False)
    assert stage_rf(v3, (3, 299, 299)) == 1311


@pytest.mark.parametrize(
    "name, size, rf",
    [("vgg16", 224, 212), ("alexnet", 224, 195), ("mobilenet_v1", 224, 315), ("inception_v3", 299, 1311)],
)
def test_rf_zoo(name, size, rf):
    assert stage_rf(zoo(name), (3, size, size)) == rf


def test_rf_zoo_vgg16_conv5_3():
    rows = receptive_field(zoo("vgg16"), (3, 224, 224))
    assert [r for r in rows if r.type == "Conv2d"][-1].rf == (196, 196)


# --------------------------------------------------------------------------------------------------
# MACs


@pytest.mark.parametrize(
    "name, size, gmacs",
    [
        ("resnet50", 224, 4.089),
        ("vgg16", 224, 15.47),
        ("alexnet", 224, 0.714),
        ("googlenet", 224, 1.50),
        ("mobilenet_v1", 224, 0.569),
        ("inception_v3", 299, 5.71),
    ],
)
def test_macs_zoo_match_published(name, size, gmacs):
    macs = count_macs(zoo(name), (3, size, size))
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_macs_torchvision_resnet50():
    assert count_macs(meta(tvm.resnet50), (3, 224, 224)) == 4_089_184_256


def test_macs_lenet5_by_hand():
    m = cnnzoo.create_model("lenet5", num_classes=10, in_chans=1)
    by_hand = 6 * 25 * 28 * 28 + 16 * 6 * 25 * 10 * 10 + 120 * 16 * 25 + 120 * 84 + 84 * 10
    assert count_macs(m) == by_hand == 416_520  # input size from the registered default (1, 32, 32)
    assert count_macs(m, (1, 32, 32)) == by_hand


def test_count_macs_real_tensors_and_modes():
    # A real (CPU) model; train mode and batch norm must survive (run in eval, mode given back).
    m = tvm.resnet18(num_classes=10)
    m.train()
    m.layer1.eval()
    macs = count_macs(m, (3, 64, 64))
    assert macs == pytest.approx(1.8186e9 * (64 / 224) ** 2, rel=0.02)
    assert m.training and not m.layer1.training and m.layer2.training
    with pytest.raises(ValueError, match="input_size"):
        count_macs(m)


# --------------------------------------------------------------------------------------------------
# Summary


def test_summary_totals_and_json():
    m = cnnzoo.create_model("lenet5", num_classes=10, in_chans=1)
    m.c1.weight.requires_grad_(False)
    s = summary(m)
    assert s.input_size == (1, 32, 32) and s.output_shape == (10,)
    assert s.total_params == sum(p.numel() for p in m.parameters()) == 61_706
    assert s.trainable_params == 61_706 - 150
    assert s.total_macs == 416_520 == sum(r.macs for r in s.layers)
    assert [r.name for r in s.layers][:3] == ["c1", "act", "s2"]
    c1 = s.layers[0]
    assert (c1.type, c1.kernel, c1.stride, c1.padding, c1.groups) == ("Conv2d", (5, 5), (1, 1), (0, 0), 1)
    assert c1.output_shape == (6, 28, 28)
    assert (c1.params, c1.macs, c1.rf, c1.jump) == (156, 117_600, (5, 5), (1, 1))
    assert [r.rf[0] for r in s.layers if r.type == "Conv2d"] == [5, 14, 32]  # C5 sees the whole 32x32
    assert sum(r.repeated for r in s.layers) == 3  # the ReLU module is called four times
    data = summary_to_json(s)
    assert json.loads(json.dumps(data)) == data
    assert data["totals"]["params"] == 61_706 and data["layers"][0]["kernel"] == [5, 5]
    text = format_summary(s)
    assert "61,706" in text and "416,520" in text and "c1" in text


def test_summary_depth_and_activation_memory():
    m = meta(tvm.resnet18)
    s_all = summary(m, (3, 64, 64), depth=None)
    s1 = summary(m, (3, 64, 64), depth=1)
    assert all(r.depth == 1 for r in s1.layers)
    stages = ["layer1", "layer2", "layer3", "layer4"]
    assert [r.name for r in s1.layers] == ["conv1", "bn1", "relu", "maxpool", *stages, "avgpool", "fc"]
    assert sum(r.macs for r in s1.layers) == s1.total_macs == s_all.total_macs
    assert sum(r.macs for r in s_all.layers if r.is_leaf) == s_all.total_macs
    assert s1.total_params == s_all.total_params == sum(p.numel() for p in m.parameters())
    assert max(r.depth for r in s_all.layers) == 4  # layer2.0.downsample.0
    assert summary(m, (3, 64, 64), depth=0).layers == []
    # Activation memory: new float tensors only; an in-place ReLU shares its input's memory.
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True))
    assert summary(net, (3, 8, 8)).activation_bytes == 8 * 8 * 8 * 4
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
    assert summary(net, (3, 8, 8)).activation_bytes == 2 * 8 * 8 * 8 * 4


@pytest.mark.parametrize("name, size", [("resnet50", 224), ("inception_v3", 299), ("mobilenet_v1", 224)])
def test_summary_zoo(name, size):
    m = zoo(name)
    s = summary(m, (3, size, size), depth=2)
    assert s.total_params == sum(p.numel() for p in m.parameters())
    assert s.total_macs == count_macs(m, (3, size, size))
    assert s.output_shape == (1000,)
    data = summary_to_json(s)
    assert json.loads(json.dumps(data))["totals"]["macs"] == s.total_macs
    assert name in format_summary(s)


# --------------------------------------------------------------------------------------------------
# Factorised convolutions


def test_factorize_5x5_and_7x7():
    r5 = factorize(5, 64, 64, size=32)
    full, stack, pair = r5.options
    assert [o.receptive_field for o in r5.options] == [(5, 5)] * 3
    assert [o.output_size for o in r5.options] == [(28, 28)] * 3  # 32 -> 28 either way
    assert [o.nonlinearities for o in r5.options] == [1, 2, 2]
    assert stack.weight_ratio == Fraction(18, 25)
    assert pair.weight_ratio == Fraction(2, 5)
    assert full.params == 64 * 64 * 25 + 64
    assert stack.params == 2 * (64 * 64 * 9 + 64)
    assert full.macs == 28 * 28 * 64 * 64 * 25
    assert stack.macs == (30 * 30 + 28 * 28) * 64 * 64 * 9
    assert stack.param_ratio == pytest.approx(18 / 25, rel=0.01)

    r7 = factorize(7, 32)
    assert r7.channels_out == 32
    assert r7.options[1].weight_ratio == Fraction(27, 49) and len(r7.options[1].layers) == 3
    assert r7.options[1].output_size == (26, 26)
    assert r7.options[2].layers[0][:6] == (1, 7, 32, 32, 32, 26)

    # Different widths: only the first layer of a stack changes the channel count.
    r = factorize(5, 3, 64, size=28)
    assert r.options[1].weights == 3 * 64 * 9 + 64 * 64 * 9
    assert r.options[0].output_size == (24, 24)


def test_factorize_outputs(tmp_path):
    r = factorize(7, 64)
    data = factorize_to_json(r)
    assert json.loads(json.dumps(data))["options"][1]["weight_ratio_fraction"] == "27/49"
    text = format_factorize(r)
    assert "27/49" in text and "1x7 + 7x1" in text
    out = plot_factorize(r, tmp_path / "f.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for bad in (4, 1):
        with pytest.raises(ValueError):
            factorize(bad, 8)
    with pytest.raises(ValueError):
        factorize(7, 8, size=5)


def test_summary_marks_the_feature_stages():
    model = cnnzoo.create_model("resnet20").eval()
    result = summary(model, depth=1)
    marked = {r.name: r.feature for r in result.layers if r.feature is not None}
    assert marked == {info["module"]: i for i, info in enumerate(model.feature_info)}
    stages = model.forward_intermediates(torch.randn(1, 3, 32, 32), intermediates_only=True)
    for r in result.layers:
        if r.feature is not None:  # the row's output is the map forward_intermediates returns
            assert tuple(stages[r.feature].shape[1:]) == r.output_shape
    table = format_summary(result).splitlines()
    assert table[1].split()[-1] == "Feature"
    assert summary_to_json(result)["layers"][-1]["feature_index"] is None
