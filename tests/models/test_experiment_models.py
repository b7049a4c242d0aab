"""The model options of the design experiments (cnnzoo experiment): vgg_mini's units, batch norm and
dropout, resnext11_cifar at equal parameters, seresnet20's se_reduction, MobileNet v1 without
depthwise separation. Parameter counts are worked out by hand in the comments."""
from __future__ import annotations

import pytest
import torch

import cnnzoo
from cnnzoo.analysis import count_macs
from cnnzoo.models.registry import model_arguments
from tests.helpers import assert_min_input_is_true_minimum


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def conv(cin: int, cout: int, kh: int, kw: int, bn: bool) -> int:
    """A biased convolution and, with ``bn``, its batch norm's scale and shift."""
    return cin * cout * kh * kw + cout + (2 * cout if bn else 0)


# Per stage (C_in -> C): "5x5" one 5x5; "3x3" 3x3 C_in -> C then 3x3 C -> C; "1x5" 1x5 then 5x1.
KERNELS = {"5x5": [(5, 5)], "3x3": [(3, 3), (3, 3)], "1x5": [(1, 5), (5, 1)]}


def vgg_mini_params(unit: str, bn: bool, widths=(32, 64, 128), hidden: int = 256, classes: int = 10) -> int:
    total, cin = 0, 1
    for c in widths:
        for i, (kh, kw) in enumerate(KERNELS[unit]):
            total += conv(cin if i == 0 else c, c, kh, kw, bn)
        cin = c
    return total + (widths[-1] * hidden + hidden) + (hidden * classes + classes)  # fc1, fc2


@pytest.mark.parametrize("unit", ["5x5", "3x3", "1x5"])
@pytest.mark.parametrize("bn", [True, False])
def test_vgg_mini_units_params_and_shapes(unit, bn):
    model = cnnzoo.create_model("vgg_mini", unit=unit, batch_norm=bn, drop_rate=0.5, num_classes=10, in_chans=1)
    assert n_params(model) == vgg_mini_params(unit, bn)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == KERNELS[unit] * 3
    assert all(c.padding == (c.kernel_size[0] // 2, c.kernel_size[1] // 2) for c in convs)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == (len(convs) if bn else 0)
    x = torch.randn(2, 1, 28, 28)
    assert model.forward_features(x).shape == (2, 128, 3, 3)  # 28 -> 14 -> 7 -> 3
    assert model(x).shape == (2, 10)
    assert model.drop.p == 0.5


def test_vgg_mini_counts_by_hand_and_errors():
    # Two 3x3 with batch norm: stage 1: 1*32*9+32+64 = 384, 32*32*9+32+64 = 9,312; stage 2: 18,624 +
    # 37,056; stage 3: 73,984 + 147,840; fc1 128*256+256 = 33,024; fc2 2,570. Sum 322,922.
    assert vgg_mini_params("3x3", True) == 322_922
    # one 5x5 without: 1*32*25+32 = 832; 32*64*25+64 = 51,264; 64*128*25+128 = 204,928; + 35,594 = 292,618
    assert vgg_mini_params("5x5", False) == 292_618
    assert model_arguments("vgg_mini")["unit"] == "3x3"
    with pytest.raises(ValueError, match="unit must be one of"):
        cnnzoo.create_model("vgg_mini", unit="7x7")
    assert_min_input_is_true_minimum("vgg_mini")


def resnext11_params(groups: int, d: int, classes: int = 10, planes_per_stage=(32, 64, 128)) -> int:
    """Stem 3x3 (1 -> first planes) + BN, one bottleneck per stage (planes 32/64/128 by default,
    outputs 4x) with a projection shortcut, fc. Bottleneck width: groups * int(planes * d / 64)."""
    total, cin = 1 * planes_per_stage[0] * 9 + 2 * planes_per_stage[0], planes_per_stage[0]
    for planes in planes_per_stage:
        w, out = groups * (planes * d // 64), 4 * planes
        total += cin * w + 2 * w + 9 * w * w // groups + 2 * w + w * out + 2 * out + cin * out + 2 * out
        cin = out
    return total + cin * classes + classes


def test_resnext11_cardinality_at_equal_parameters():
    # 1x64d: 352 stem + 19,072 + 95,488 + 379,392 (blocks) + 5,130 (fc) = 499,434
    assert resnext11_params(1, 64) == 499_434
    base = resnext11_params(1, 64)
    for groups, d in ((1, 64), (2, 40), (4, 24), (8, 14)):
        model = cnnzoo.create_model("resnext11_cifar", groups=groups, base_width=d, num_classes=10, in_chans=1)
        assert n_params(model) == resnext11_params(groups, d)
        assert abs(n_params(model) / base - 1) < 0.05  # Xie et al. Table 2's settings, within 5% here
        assert model.layer1[0].conv2.groups == groups
        assert model.layer1[0].conv2.out_channels == groups * (d // 2)
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_resnext11_narrower_planes():
    # the CPU league's ResNeXt: planes 16/32/64, 8 groups of 8d-wide paths
    model = cnnzoo.create_model("resnext11_cifar", widths=[16, 32, 64], groups=8, base_width=8, num_classes=10,
                                in_chans=1)
    assert n_params(model) == resnext11_params(8, 8, planes_per_stage=(16, 32, 64)) == 85_018
    assert [model.get_submodule(f"layer{i}")[0].conv2.out_channels for i in (1, 2, 3)] == [16, 32, 64]
    assert model.num_features == 256 and model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    # a stride-2 stem: the same weights, every stage at half the size
    halved = cnnzoo.create_model("resnext11_cifar", groups=8, base_width=8, stem_stride=2, num_classes=10, in_chans=1)
    maps = halved.forward_intermediates(torch.randn(2, 1, 28, 28), intermediates_only=True)
    assert [m.shape[-1] for m in maps] == [14, 7, 4] and [f["reduction"] for f in halved.feature_info] == [2, 4, 8]
    assert n_params(halved) == resnext11_params(8, 8)
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2 and only with stem='cifar', got 2"):
        cnnzoo.create_model("resnet18", stem_stride=2)


def test_seresnet20_se_reduction():
    for reduction, widths in ((16, [4, 4, 4]), (4, [4, 8, 16]), (2, [8, 16, 32])):
        model = cnnzoo.create_model("seresnet20", se_reduction=reduction, num_classes=10)
        assert [model.get_submodule(f"layer{i}")[0].se.fc1.out_channels for i in (1, 2, 3)] == widths
    # Over resnet20, an SE of width r per block: c*r + r + r*c + c; r=4 at 16/32/64 channels -> 4/8/16.
    se4 = 3 * sum(2 * c * r + r + c for c, r in ((16, 4), (32, 8), (64, 16)))
    resnet20 = n_params(cnnzoo.create_model("resnet20", num_classes=10))
    assert n_params(cnnzoo.create_model("seresnet20", se_reduction=4, num_classes=10)) == resnet20 + se4
    assert model_arguments("seresnet20")["se_reduction"] == 16
    with pytest.raises(ValueError, match="se_reduction"):
        cnnzoo.create_model("seresnet20", se_reduction=0)


def test_mobilenet_v1_full_convolutions_match_table4():
    with torch.device("meta"):
        full = cnnzoo.create_model("mobilenet_v1", separable=False)
        sep = cnnzoo.create_model("mobilenet_v1")
    # Howard et al. Table 4: Conv MobileNet 29.3M parameters, 4866M mult-adds; MobileNet 4.2M, 569M.
    assert round(n_params(full) / 1e5) == 293 and round(count_macs(full, (3, 224, 224)) / 1e6) == 4867
    assert round(n_params(sep) / 1e5) == 42 and round(count_macs(sep, (3, 224, 224)) / 1e6) == 569
    convs = [m for m in full.stages.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 13 and all(c.kernel_size == (3, 3) and c.groups == 1 for c in convs)
    # 3x3 full convolutions where each separable pair was: the first, 32 -> 64, has 9*32*64 weights.
    assert convs[0].weight.shape == (64, 32, 3, 3) and [c.stride for c in convs][:2] == [(1, 1), (2, 2)]
    small = cnnzoo.create_model("mobilenet_v1_cifar", separable=False, width_mult=0.25, num_classes=10, in_chans=1)
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 10)
