"""VGG A/B/D/E with and without batch norm (against torchvision) and the CIFAR VGGs."""
from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import cnnzoo
from cnnzoo.models.registry import get_model_cfg
from cnnzoo.models.weights import convert_state_dict
from tests.helpers import assert_min_input_is_true_minimum, sgd_losses

# torchvision's parameter counts for 1000 classes (as its documentation lists them).
IMAGENET = {
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248,
}
CIFAR = ["vgg11_cifar", "vgg13_cifar", "vgg16_cifar", "vgg19_cifar"]
# Convolutions per stage of the paper's Table 1 configurations A, B, D, E.
TABLE1 = {"vgg11": (1, 1, 2, 2, 2), "vgg13": (2, 2, 2, 2, 2), "vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# --------------------------------------------------------------------------------------------------
# All eight ImageNet models: parameter counts and key layouts, built on the meta device (no memory,
# no initialisation), so the 130-144M-parameter networks cost nothing here.


@pytest.mark.parametrize("name", list(IMAGENET))
def test_param_count_and_torchvision_keys(name):
    with torch.device("meta"):
        ours = cnnzoo.create_model(name)
        ref = getattr(torchvision.models, name)(weights=None)
    assert n_params(ours) == n_params(ref) == IMAGENET[name]
    layout, renamed = convert_state_dict(ours, ref.state_dict())
    assert layout == "torchvision"
    own = ours.state_dict()
    assert set(renamed) == set(own)
    assert all(renamed[k].shape == own[k].shape for k in own)


@pytest.mark.parametrize("name", ["vgg11", "vgg19_bn"])
def test_table1_conv_stacks(name):
    with torch.device("meta"):
        model = cnnzoo.create_model(name)
    depths = TABLE1[name.removesuffix("_bn")]
    for s, (depth, width) in enumerate(zip(depths, WIDTHS), start=1):
        stage = model.get_submodule(f"stage{s}")
        convs = [m for m in stage.modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == depth
        assert all(c.out_channels == width and c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
        n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in stage.modules())
        assert n_bn == (depth if name.endswith("_bn") else 0)
        assert sum(isinstance(m, torch.nn.MaxPool2d) for m in stage.modules()) == 1
    assert (model.fc6.in_features, model.fc6.out_features, model.fc7.out_features) == (512 * 7 * 7, 4096, 4096)


# --------------------------------------------------------------------------------------------------
# Full checks against torchvision's randomly initialised weights: vgg11 (.pth, with the adaptation
# rules) and vgg16_bn (.safetensors). 32x32 inputs: the adaptive 7x7 pool makes both accept them.


def _save_reference(name: str, folder, fmt: str):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        # Non-trivial batch-norm parameters and statistics, so that they are checked too.
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    if fmt == "pth":
        path = folder / f"{name}.pth"
        torch.save(ref.state_dict(), path)
    else:
        path = folder / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    return ref, path


def _ref_pre_logits(ref: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return ref.classifier[:-1](torch.flatten(ref.avgpool(ref.features(x)), 1))


@pytest.fixture(scope="module")
def vgg11_reference(tmp_path_factory):
    return _save_reference("vgg11", tmp_path_factory.mktemp("vgg11"), "pth")


@pytest.mark.slow
def test_vgg11_loads_torchvision_weights(vgg11_reference):
    ref, path = vgg11_reference
    model = cnnzoo.create_model("vgg11", pretrained=path).eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_vgg11_other_num_classes_keeps_features(vgg11_reference):
    ref, path = vgg11_reference
    with pytest.warns(UserWarning, match="classifier"):
        model = cnnzoo.create_model("vgg11", num_classes=10, pretrained=path).eval()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model(x).shape == (2, 10)
        ours = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(ours, _ref_pre_logits(ref, x), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_vgg11_grey_input_adapts_first_conv(vgg11_reference):
    ref, path = vgg11_reference
    model = cnnzoo.create_model("vgg11", in_chans=1, pretrained=path).eval()
    torch.manual_seed(3)
    x1 = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x1), ref(x1.repeat(1, 3, 1, 1)), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_vgg16_bn_loads_torchvision_safetensors(tmp_path):
    ref, path = _save_reference("vgg16_bn", tmp_path, "safetensors")
    model = cnnzoo.create_model("vgg16_bn", pretrained=path).eval()
    torch.manual_seed(4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=0)
        ours = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(ours, _ref_pre_logits(ref, x), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------------------------------
# CIFAR VGGs


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_layer_table(name):
    depths = TABLE1[name.removesuffix("_cifar")]
    model = cnnzoo.create_model(name, in_chans=1, num_classes=10).eval()
    # Convolutions (with bias) + batch norm per the configuration, then FC-512 and FC-10.
    expected, cin = 0, 1
    for depth, width in zip(depths, WIDTHS):
        for _ in range(depth):
            expected += 9 * cin * width + width + 2 * width
            cin = width
    expected += (512 * 512 + 512) + (512 * 10 + 10)
    assert n_params(model) == expected
    with torch.no_grad():
        # Four 2x2 max-pools: 32 -> 2x2 and 28 -> 1x1, then the global average pool.
        assert model.forward_features(torch.randn(1, 1, 32, 32)).shape == (1, 512, 2, 2)
        assert model.forward_features(torch.randn(1, 1, 28, 28)).shape == (1, 512, 1, 1)
        assert model.forward_head(model.forward_features(torch.randn(1, 1, 28, 28)), pre_logits=True).shape == (1, 512)
    assert get_model_cfg(name)["input_size"] == (3, 32, 32)


def test_vgg16_cifar_known_count():
    # The conv stack of the common CIFAR VGG-16 (conv with bias + BN) has 14,728,266 parameters with
    # a single 512 -> 10 classifier; ours adds the 512 -> 512 hidden layer (262,656).
    assert n_params(cnnzoo.create_model("vgg16_cifar", num_classes=10)) == 14_728_266 + 262_656


@pytest.mark.slow
def test_vgg11_cifar_trains_on_grey_28x28():
    losses = sgd_losses("vgg11_cifar", batch=16, steps=12, lr=0.05)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < 0.7 * losses[0], losses


# --------------------------------------------------------------------------------------------------
# Every model: smallest input (each ImageNet model built once, here), registry


@pytest.mark.slow
@pytest.mark.parametrize("name", list(IMAGENET) + CIFAR)
def test_runs_at_min_input_size_and_rejects_smaller(name):
    assert_min_input_is_true_minimum(name)


def test_registry():
    assert cnnzoo.list_models("vgg*") == sorted(list(IMAGENET) + CIFAR + ["vgg_airbench", "vgg_airbench_96", "vgg_airbench_wide", "vgg_mini"])
    for name in list(IMAGENET) + CIFAR:
        cfg = get_model_cfg(name)
        assert cfg["family"] == "VGG"
        depth = name.removeprefix("vgg").split("_")[0]
        assert cfg["small_variant"] == f"vgg{depth}_cifar"
        assert cfg["reference"] == (f"torchvision:{name}" if name in IMAGENET else None)
    with torch.device("meta"):
        assert cnnzoo.create_model("vgg11").pretrained_cfg["classifier"] == "fc8"
        assert cnnzoo.create_model("vgg11_cifar").pretrained_cfg["first_conv"] == "stage1.conv1.conv"


# --------------------------------------------------------------------------------------------------
# vgg_airbench: the fast recipe's network


def test_airbench_layer_table():
    # widths 32/64/128 after a 2x2 whitening stem of 2 x 4 filters: 28 -> 27 -> 13 -> 6 -> 3
    model = cnnzoo.create_model("vgg_airbench")
    assert model.pretrained_cfg["input_size"] == (1, 28, 28) and model.num_classes == 10
    x = torch.randn(2, 1, 28, 28)
    shapes = []
    for stage in (model.stem, model.stage1, model.stage2, model.stage3):
        x = stage(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(8, 27, 27), (32, 13, 13), (64, 6, 6), (128, 3, 3)]
    convs = 8 * 1 * 4 + 8 + 9 * (8 * 32 + 32 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128)
    bns = 2 * 2 * (32 + 64 + 128)
    assert n_params(model) == convs + bns + 128 * 10


def test_airbench_stem_whitens_patches_and_freezes():
    torch.manual_seed(0)
    # correlated "images": smooth random fields, whose 2x2 patches are far from white
    images = torch.nn.functional.avg_pool2d(torch.randn(400, 1, 31, 31), 4, stride=1)
    model = cnnzoo.create_model("vgg_airbench")
    model.init_from_data(images)
    out = model.stem(images)[:, :4]  # the positive half of the filters
    features = out.permute(0, 2, 3, 1).reshape(-1, 4).double()
    cov = torch.cov(features.T)
    # decorrelated, and unit variance up to the eps that keeps near-zero eigenvalues from exploding
    off_diagonal = cov - torch.diag(torch.diagonal(cov))
    assert off_diagonal.abs().max() < 1e-4, cov
    assert ((torch.diagonal(cov) > 0.85) & (torch.diagonal(cov) < 1.0001)).all(), cov
    raw = torch.cov(torch.nn.functional.unfold(images, 2).transpose(1, 2).reshape(-1, 4).T.double())
    assert (raw - torch.diag(torch.diagonal(raw))).abs().max() > 0.1 * torch.diagonal(raw).min()  # it was correlated
    assert not any(p.requires_grad for p in model.stem.parameters())
    assert torch.equal(model.stem.conv.weight[4:], -model.stem.conv.weight[:4])


def test_airbench_stem_act_puts_a_gelu_after_the_whitening():
    # airbench's GELU after the whitened stem: no new parameters, the stem's output through a GELU
    torch.manual_seed(0)
    plain, gelu = cnnzoo.create_model("vgg_airbench"), cnnzoo.create_model("vgg_airbench", stem_act=True)
    assert n_params(gelu) == n_params(plain)
    gelu.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(gelu.stem(x), torch.nn.functional.gelu(plain.stem(x)))
    assert not torch.equal(gelu(x), plain(x))


def test_airbench_wide_doubles_the_widths():
    model = cnnzoo.create_model("vgg_airbench_wide")
    assert [model.stage1.conv1.out_channels, model.stage2.conv1.out_channels, model.fc.in_features] == [64, 128, 256]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_airbench_96_is_vgg_airbench_at_widths_32_96_192():
    # the same construction, so the same weights from the same seed as --model-kwargs "widths=(32,96,192)"
    torch.manual_seed(0)
    model = cnnzoo.create_model("vgg_airbench_96")
    torch.manual_seed(0)
    same = cnnzoo.create_model("vgg_airbench", widths=(32, 96, 192))
    assert [model.stage1.conv1.out_channels, model.stage2.conv1.out_channels, model.fc.in_features] == [32, 96, 192]
    assert model.state_dict().keys() == same.state_dict().keys()
    assert all(torch.equal(v, same.state_dict()[k]) for k, v in model.state_dict().items())


def test_airbench_depths_add_residual_convolutions():
    # each convolution past a stage's second adds conv 3x3 + BN at the stage's width, same shapes
    base, deep = cnnzoo.create_model("vgg_airbench"), cnnzoo.create_model("vgg_airbench", depths=(2, 3, 4))
    assert n_params(deep) - n_params(base) == 9 * 64 * 64 + 2 * 64 + 2 * (9 * 128 * 128 + 2 * 128)
    assert len(deep.stage1.residuals) == 0 and len(deep.stage3.residuals) == 2
    x = torch.randn(2, 1, 28, 28)
    assert deep.stage2(deep.stage1(deep.stem(x))).shape == (2, 64, 6, 6) and deep(x).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 2 convolutions, got depth=1"):
        cnnzoo.create_model("vgg_airbench", depths=(1, 2, 2))


def test_airbench_trains_and_runs_at_min_input():
    losses = sgd_losses("vgg_airbench", batch=32, steps=12, lr=0.05)
    assert min(losses[-3:]) < 0.7 * losses[0], losses
    assert_min_input_is_true_minimum("vgg_airbench")


def test_cifar_vgg_width_mult_scales_every_stage():
    half = cnnzoo.create_model("vgg11_cifar", width_mult=0.5, in_chans=1)
    widths = [getattr(half, f"stage{i}")[0].conv.out_channels for i in range(1, 6)]
    assert widths == [32, 64, 128, 256, 256]
    assert half.fc1.in_features == half.num_features == 256 and half.feature_info[-1]["num_chs"] == 256
    assert half(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    full = cnnzoo.create_model("vgg11_cifar")
    assert n_params(half) < 0.3 * n_params(full)  # conv weights scale with the square of the width
    with pytest.raises(ValueError, match="width_mult must be > 0, got 0"):
        cnnzoo.create_model("vgg11_cifar", width_mult=0)
