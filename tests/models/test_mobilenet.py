"""MobileNet v1 / v2: parameter counts and logits against timm and torchvision, the papers' tables,
minimum input sizes, the CIFAR variants."""
from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

import cnnzoo
from cnnzoo.models.mobilenet import InvertedResidual, MobileNetV1, make_divisible
from tests.helpers import sgd_losses

NAMES = ["mobilenet_v1", "mobilenet_v1_025", "mobilenet_v1_050", "mobilenet_v1_075", "mobilenet_v1_cifar",
         "mobilenet_v2", "mobilenet_v2_cifar"]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def count_macs(m: nn.Module, size: int) -> int:
    """Multiply-adds of the convolutions and linear layers for one image (what the papers count)."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features

    handles = [mod.register_forward_hook(hook) for mod in m.modules()]
    with torch.no_grad():
        m.eval()(torch.randn(1, 3, size, size))
    for h in handles:
        h.remove()
    return total


def timm_model(name: str) -> nn.Module:
    """timm's ``name``; only the tests that compare against timm skip when it is missing."""
    return pytest.importorskip("timm").create_model(name)


def timm_v1(width: float) -> nn.Module:
    timm = pytest.importorskip("timm")
    if width == 1.0:
        return timm.create_model("mobilenetv1_100")
    # timm registers only width 1.0 (and 1.25); its generator builds the paper's other widths.
    gen = getattr(timm.models.efficientnet, "_gen_mobilenet_v1", None)
    if gen is None:
        pytest.skip("this timm has no MobileNet v1 generator")
    return gen("mobilenetv1_100", channel_multiplier=width)


# reference builders: (ours, how to build the reference, its pre-logit features)
def _timm_pre_logits(ref, x):
    return ref.forward_head(ref.forward_features(x), pre_logits=True)


def _tv_pre_logits(ref, x):
    return torch.flatten(nn.functional.adaptive_avg_pool2d(ref.features(x), 1), 1)


REFERENCES = {
    "timm_v1": ("mobilenet_v1", lambda: timm_model("mobilenetv1_100"), _timm_pre_logits),
    "torchvision_v2": ("mobilenet_v2", lambda: torchvision.models.mobilenet_v2(weights=None), _tv_pre_logits),
    "timm_v2": ("mobilenet_v2", lambda: timm_model("mobilenetv2_100"), _timm_pre_logits),
}


# --------------------------------------------------------------------------------------------------
# Against the references


@pytest.mark.parametrize(
    "name, ref_params",
    [("mobilenet_v1", 4_231_976), ("mobilenet_v2", 3_504_872)],
)
def test_registered_param_counts(name, ref_params):
    assert n_params(cnnzoo.create_model(name)) == ref_params


def test_param_counts_equal_references():
    ours_v2 = n_params(cnnzoo.create_model("mobilenet_v2"))
    assert ours_v2 == n_params(torchvision.models.mobilenet_v2(weights=None))
    assert ours_v2 == n_params(timm_model("mobilenetv2_100"))
    assert n_params(cnnzoo.create_model("mobilenet_v1")) == n_params(timm_model("mobilenetv1_100"))


@pytest.mark.parametrize("name, width",
                         [("mobilenet_v1_075", 0.75), ("mobilenet_v1_050", 0.5), ("mobilenet_v1_025", 0.25)])
def test_v1_widths_equal_timm(name, width, tmp_path):
    torch.manual_seed(0)
    ref = timm_v1(width).eval()
    path = tmp_path / "ref.pth"
    torch.save(ref.state_dict(), path)
    ours = cnnzoo.create_model(name, pretrained=path).eval()
    assert n_params(ours) == n_params(ref)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("width", [0.35, 0.5, 0.75, 1.4])
def test_v2_width_mult_param_counts(width):
    ours = n_params(cnnzoo.create_model("mobilenet_v2", width_mult=width))
    assert ours == n_params(torchvision.models.mobilenet_v2(weights=None, width_mult=width))


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
@pytest.mark.parametrize("ref_key", list(REFERENCES))
def test_reference_weights_give_reference_logits(ref_key, fmt, tmp_path):
    name, build, _ = REFERENCES[ref_key]
    torch.manual_seed(0)
    ref = build().eval()
    path = tmp_path / f"ref.{fmt}"
    if fmt == "pth":
        torch.save(ref.state_dict(), path)
    else:
        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    ours = cnnzoo.create_model(name, pretrained=path).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("ref_key", list(REFERENCES))
def test_reference_weights_adapted(ref_key, tmp_path):
    name, build, pre_logits = REFERENCES[ref_key]
    torch.manual_seed(0)
    ref = build().eval()
    path = tmp_path / "ref.pth"
    torch.save(ref.state_dict(), path)
    x = torch.randn(2, 3, 48, 48)
    x1 = torch.randn(2, 1, 48, 48)

    with pytest.warns(UserWarning, match="classifier"):
        ours10 = cnnzoo.create_model(name, num_classes=10, pretrained=path).eval()
    grey = cnnzoo.create_model(name, in_chans=1, pretrained=path).eval()
    with torch.no_grad():
        assert ours10(x).shape == (2, 10)
        torch.testing.assert_close(ours10.forward_head(ours10.forward_features(x), pre_logits=True),
                                   pre_logits(ref, x), atol=1e-5, rtol=0)
        torch.testing.assert_close(grey(x1), ref(x1.repeat(1, 3, 1, 1)), atol=1e-4, rtol=0)


# --------------------------------------------------------------------------------------------------
# The papers' tables


@pytest.mark.parametrize(
    "name, mmacs, mparams",
    # MobileNets paper Table 6 (width multiplier, 224x224): million mult-adds, million parameters.
    [("mobilenet_v1", 569, 4.2), ("mobilenet_v1_075", 325, 2.6), ("mobilenet_v1_050", 149, 1.3),
     ("mobilenet_v1_025", 41, 0.5),
     # MobileNetV2 paper Table 4: 300M mult-adds (it rounds the parameters to 3.4M; timm and
     # torchvision, checked above, have 3.50M).
     ("mobilenet_v2", 300, 3.5)],
)
def test_paper_cost(name, mmacs, mparams):
    m = cnnzoo.create_model(name)
    # The papers round to the million (v2's 300.8M is "300M").
    assert abs(count_macs(m, 224) / 1e6 - mmacs) <= 1
    assert round(n_params(m) / 1e6, 1) == mparams


def test_v1_layer_table():
    """Paper Table 1: 112 -> 112 -> 56 -> 28 -> 14 -> 7 with 32, 64, 128, 256, 512, 1024 channels,
    13 depthwise separable layers."""
    m = cnnzoo.create_model("mobilenet_v1").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        x = m.stem(x)
        assert x.shape == (1, 32, 112, 112)
        shapes = []
        for stage in m.stages:
            x = stage(x)
            shapes.append(tuple(x.shape[1:]))
    assert shapes == [(64, 112, 112), (128, 56, 56), (256, 28, 28), (512, 14, 14), (1024, 7, 7)]
    assert sum(len(s) for s in m.stages) == 13
    assert m.classifier.in_features == 1024


def test_v2_layer_table():
    """Paper Table 2: the seven bottleneck rows (channels 16..320, 1, 2, 3, 4, 3, 3, 1 blocks)."""
    m = cnnzoo.create_model("mobilenet_v2").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        x = m.stem(x)
        assert x.shape == (1, 32, 112, 112)
        shapes = []
        for stage in m.stages:
            x = stage(x)
            shapes.append(tuple(x.shape[1:]))
        assert m.last_conv(x).shape == (1, 1280, 7, 7)
    assert shapes == [(16, 112, 112), (24, 56, 56), (32, 28, 28), (64, 14, 14), (96, 14, 14), (160, 7, 7),
                      (320, 7, 7)]
    assert [len(s) for s in m.stages] == [1, 2, 3, 4, 3, 3, 1]
    blocks = [b for s in m.stages for b in s]
    assert all(isinstance(b, InvertedResidual) for b in blocks)
    # Shortcuts exactly where stride 1 and width kept: 17 blocks, 10 with a residual.
    assert sum(b.use_residual for b in blocks) == 10
    # Expansion 6 (t=1 in the first block), linear projection.
    assert isinstance(blocks[0].expand, nn.Identity)
    assert blocks[1].expand.conv.out_channels == 16 * 6
    assert isinstance(blocks[1].project.act, nn.Identity)


def test_v2_channel_rounding():
    # Multiples of 8, never below 90% of the exact value (torchvision / TF-slim facts).
    assert [make_divisible(c * 0.35) for c in (32, 16, 24, 32, 64, 96, 160, 320)] == [16, 8, 8, 16, 24, 32, 56, 112]
    assert make_divisible(1280 * 1.4) == 1792


def test_v1_activation_option():
    m = cnnzoo.create_model("mobilenet_v1", act="relu")
    assert not any(isinstance(x, nn.ReLU6) for x in m.modules())
    assert any(type(x) is nn.ReLU for x in m.modules())
    assert any(isinstance(x, nn.ReLU6) for x in cnnzoo.create_model("mobilenet_v1").modules())
    with pytest.raises(ValueError, match="act"):
        MobileNetV1(act="gelu")


# --------------------------------------------------------------------------------------------------
# Input sizes, small variants, registry


@pytest.mark.parametrize("name", NAMES)
def test_min_input_size(name):
    m = cnnzoo.create_model(name, num_classes=5).train()
    _, h, w = m.pretrained_cfg["min_input_size"]
    out = m(torch.randn(2, 3, h, w))
    assert out.shape == (2, 5)
    out.sum().backward()
    with pytest.raises(ValueError, match="at least"):
        m(torch.randn(2, 3, h - 1, w))


@pytest.mark.parametrize("name, side", [("mobilenet_v1_cifar", 2), ("mobilenet_v2_cifar", 4)])
@pytest.mark.parametrize("size", [28, 32])
def test_cifar_variants_keep_resolution(name, side, size):
    m = cnnzoo.create_model(name, in_chans=1, num_classes=10).eval()
    with torch.no_grad():
        feats = m.forward_features(torch.randn(2, 1, size, size))
        assert feats.shape[2:] == (side, side)
        assert m(torch.randn(2, 1, size, size)).shape == (2, 10)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v1_cifar", "mobilenet_v2_cifar"])
def test_cifar_variant_trains(name):
    losses = sgd_losses(name, batch=32, steps=15, lr=0.05)
    assert losses[-1] < 0.5 * losses[0], losses


def test_list_models():
    assert cnnzoo.list_models("mobilenet*") == sorted(NAMES)
    assert cnnzoo.list_models("mobilenet*_cifar") == ["mobilenet_v1_cifar", "mobilenet_v2_cifar"]
    cfg = cnnzoo.get_model_cfg("mobilenet_v1")
    assert cfg["reference"] == "timm:mobilenetv1_100" and cfg["small_variant"] == "mobilenet_v1_cifar"
    assert cnnzoo.get_model_cfg("mobilenet_v2")["reference"] == "torchvision:mobilenet_v2"
