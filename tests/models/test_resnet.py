"""ResNet / ResNeXt / SE-ResNet family: torchvision and timm equivalence, the papers' CIFAR tables,
input-size limits and a short training run."""
from __future__ import annotations

import functools
import warnings

import pytest
import torch
import torchvision
from torch import nn

import cnnzoo
from cnnzoo.models.resnet import BasicBlock, PadShortcut, ResNet
from cnnzoo.models.weights import convert_state_dict
from tests.helpers import sgd_losses

TORCHVISION = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
    "resnext50_32x4d": 25_028_904,
    "resnext101_32x8d": 88_791_336,
}
TIMM = {
    "seresnet18": 11_779_624,
    "seresnet34": 21_960_416,
    "seresnet50": 28_088_024,
    "seresnet101": 49_326_872,
    "seresnet152": 66_821_848,
    "seresnext50_32x4d": 27_559_896,
}
CIFAR_N = {"20": 3, "32": 5, "44": 7, "56": 9, "110": 18}
# He et al. section 4.2 / akamaster-style tables: parameters of the CIFAR ResNets, in millions.
CIFAR_PAPER_M = {"20": 0.27, "32": 0.46, "44": 0.66, "56": 0.85, "110": 1.7}

FAMILY_NAMES = (
    [*TORCHVISION, *TIMM, "resnet18_cifar", "seresnet18_cifar", "seresnet20", "resnext29_8x64d", "resnext29_8x16d"]
    + [f"resnet{d}" for d in CIFAR_N]
    + [f"plain{d}" for d in CIFAR_N]
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tests run small batches, mostly bound by model construction: one intra-op thread is as
    fast on an idle 2-core machine and avoids OpenMP oversubscription on a busy one (measured: 24 s
    of CPU with one thread against 180 s with two under load). Restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@functools.cache
def ours(name: str) -> nn.Module:
    """Default-built model (1000 classes) with real weights, shared by the tests that run it."""
    return cnnzoo.create_model(name)


@functools.cache
def ours_meta(name: str, **kwargs) -> nn.Module:
    """A model built on the meta device (shapes only, no memory, no initialisation cost), for the
    tests that read the structure: parameter counts, key names, output shapes."""
    with torch.device("meta"):
        return cnnzoo.create_model(name, **kwargs)


def reference(name: str, **kwargs) -> nn.Module:
    if name in TIMM:
        # Only the tests that build a timm model skip without timm.
        # timm zero-initialises the last BN of each residual branch, which would silence the SE
        # modules under test; keep it random.
        return pytest.importorskip("timm").create_model(name, pretrained=False, zero_init_last=False, **kwargs)
    return getattr(torchvision.models, name)(weights=None, **kwargs)


def randomize_bn(model: nn.Module) -> nn.Module:
    """Give every batch norm non-trivial affine parameters and running statistics, so that an
    eval-mode comparison exercises all of them (a fresh BN is the identity)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
    return model


def save(state: dict, path, fmt: str) -> str:
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = str(path) + ".safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        path = str(path) + ".pth"
        torch.save(state, path)
    return path


def pre_logits_of(ref: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if hasattr(ref, "forward_head"):  # timm
        return ref.forward_head(ref.forward_features(x), pre_logits=True)
    seen = []
    handle = ref.fc.register_forward_hook(lambda mod, inp, out: seen.append(inp[0]))
    ref(x)
    handle.remove()
    return seen[0]


# --------------------------------------------------------------------------------------------------
# References: parameter counts and key layouts for all, full logits checks for the representative ones


@pytest.mark.parametrize("name", [*TORCHVISION, *TIMM])
def test_param_count_and_keys_equal_reference(name):
    expected = {**TORCHVISION, **TIMM}[name]
    with torch.device("meta"):
        ref = reference(name)
    model = ours_meta(name)
    assert n_params(ref) == expected
    assert n_params(model) == expected
    # torchvision and timm name the layers alike; both go through the same renaming rules
    layout, state = convert_state_dict(model, ref.state_dict())
    assert layout in ("torchvision", "timm")
    own = model.state_dict()
    assert set(state) == set(own)
    assert all(state[k].shape == own[k].shape for k in own)


FULL_CHECKS = [
    ("resnet18", "safetensors"),
    ("resnet50", "pth"),
    ("resnext50_32x4d", "safetensors"),
    ("seresnet18", "pth"),
    ("seresnet50", "safetensors"),
    ("seresnext50_32x4d", "pth"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,fmt", FULL_CHECKS)
def test_loads_reference_weights(name, fmt, tmp_path):
    torch.manual_seed(0)
    ref = randomize_bn(reference(name)).eval()
    path = save(ref.state_dict(), tmp_path / name, fmt)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = ref(x)
        want_pre = pre_logits_of(ref, x)
        x1 = torch.randn(2, 1, 64, 64)
        want_grey = ref(x1.repeat(1, 3, 1, 1))

    model = cnnzoo.create_model(name, pretrained=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), want, atol=1e-5, rtol=1e-5)

    with pytest.warns(UserWarning, match="classifier"):
        model = cnnzoo.create_model(name, num_classes=7, pretrained=path).eval()
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), want_pre,
                                   atol=1e-5, rtol=1e-5)

    model = cnnzoo.create_model(name, in_chans=1, pretrained=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x1), want_grey, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name,ref_name", [("resnet18_cifar", "resnet18"), ("seresnet18_cifar", "seresnet18")])
def test_cifar_resnet18_is_reference_with_small_stem(name, ref_name, tmp_path):
    """resnet18_cifar = ResNet-18 with its 7x7/2 stem and max-pool replaced by a 3x3/1 convolution."""
    torch.manual_seed(0)
    ref = reference(ref_name, num_classes=10)
    ref.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    ref.maxpool = nn.Identity()
    ref = randomize_bn(ref).eval()
    path = save(ref.state_dict(), tmp_path / name, "pth")
    model = cnnzoo.create_model(name, num_classes=10, pretrained=path).eval()
    assert n_params(model) == n_params(ref)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)
    if name == "resnet18_cifar":
        # 11,689,512 - 7x7 stem (9,408) + 3x3 stem (1,728) - 1000-way fc (513,000) + 10-way fc (5,130)
        assert n_params(model) == 11_173_962


def test_bottleneck_is_v15_and_se_widths():
    r50 = ours_meta("resnet50")
    first = r50.layer2[0]
    assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2)  # stride in the 3x3 (v1.5)
    # timm's SE width: channels/16 rounded to a multiple of 8, at least 8.
    assert ours_meta("seresnet18").layer1[0].se.fc1.out_channels == 8
    assert ours_meta("seresnet18").layer4[0].se.fc1.out_channels == 32
    assert ours_meta("seresnet50").layer1[0].se.fc1.out_channels == 16
    assert ours_meta("seresnet50").layer4[0].se.fc1.out_channels == 128
    se20 = ours_meta("seresnet20")
    assert [se20.get_submodule(f"layer{i}")[0].se.fc1.out_channels for i in (1, 2, 3)] == [4, 4, 4]


# --------------------------------------------------------------------------------------------------
# Models without a reference: the papers' tables


def cifar_resnet_params(n: int, classes: int = 10) -> int:
    """He et al. 4.2 with option A shortcuts: 3x3 convs (no bias) + BN (2 per channel) + fc."""
    conv = lambda cin, cout: cin * cout * 9 + 2 * cout  # noqa: E731
    return (
        conv(3, 16)
        + 2 * n * conv(16, 16)
        + conv(16, 32) + (2 * n - 1) * conv(32, 32)
        + conv(32, 64) + (2 * n - 1) * conv(64, 64)
        + 64 * classes + classes
    )


@pytest.mark.parametrize("depth", list(CIFAR_N))
def test_cifar_resnet_table(depth):
    n = CIFAR_N[depth]
    res = cnnzoo.create_model(f"resnet{depth}", num_classes=10)
    plain = cnnzoo.create_model(f"plain{depth}", num_classes=10)
    expected = cifar_resnet_params(n)
    assert n_params(res) == expected
    assert round(expected / 1e6, 2 if depth != "110" else 1) == CIFAR_PAPER_M[depth]
    # 6n + 2 weighted layers
    weighted = [m for m in res.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weighted) == 6 * n + 2
    # plain nets: the same layers, no shortcut of any kind
    assert n_params(plain) == expected
    assert [type(m) for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))] == [
        type(m) for m in res.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d))
    ]
    blocks = [b for s in ("layer1", "layer2", "layer3") for b in plain.get_submodule(s)]
    assert all(b.shortcut is None and b.se is None for b in blocks)
    assert not hasattr(plain, "layer4")
    # option A: where shapes change the shortcut is the parameter-free zero padding
    assert isinstance(res.layer2[0].shortcut, PadShortcut) and isinstance(res.layer3[0].shortcut, PadShortcut)
    # output map sizes 32x32, 16x16, 8x8 with 16, 32, 64 filters
    x = torch.randn(2, 3, 32, 32)
    res.eval()
    with torch.no_grad():
        x = res.maxpool(res.relu(res.bn1(res.conv1(x))))
        assert x.shape == (2, 16, 32, 32)
        for stage, shape in zip(("layer1", "layer2", "layer3"), [(16, 32, 32), (32, 16, 16), (64, 8, 8)]):
            x = res.get_submodule(stage)(x)
            assert x.shape == (2, *shape)
        assert res.forward_head(x).shape == (2, 10)


def test_resnet20_option_b_and_padding():
    # Option B (projections where the shape changes) adds 16*32+2*32 + 32*64+2*64 = 2,752.
    assert n_params(cnnzoo.create_model("resnet20", num_classes=10, shortcut="B")) == 272_474
    pad = PadShortcut(16, 2)
    x = torch.randn(2, 16, 7, 7)
    y = pad(x)
    assert y.shape == (2, 32, 4, 4)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert y[:, 16:].abs().sum() == 0


def test_seresnet20_params():
    # resnet20 + per block an SE of width 4: c*4 + 4 (fc1) + 4*c + c (fc2) = 9c + 4.
    se = 3 * sum(9 * c + 4 for c in (16, 32, 64))
    assert n_params(cnnzoo.create_model("seresnet20", num_classes=10)) == cifar_resnet_params(3) + se


def resnext29_params(cardinality: int, d: int, classes: int = 10) -> int:
    total, cin = 3 * 64 * 9 + 2 * 64, 64
    for planes in (64, 128, 256):
        width, out = cardinality * d * planes // 64, 4 * planes
        for i in range(3):
            total += cin * width + 2 * width  # 1x1 reduce
            total += width * (width // cardinality) * 9 + 2 * width  # grouped 3x3
            total += width * out + 2 * out  # 1x1 expand
            if i == 0:  # projection shortcut (64 -> 256 at stride 1, then strided)
                total += cin * out + 2 * out
            cin = out
    return total + cin * classes + classes


@pytest.mark.parametrize("name,c,d", [("resnext29_8x64d", 8, 64), ("resnext29_8x16d", 8, 16)])
def test_resnext29_table(name, c, d):
    model = ours_meta(name, num_classes=10)
    assert n_params(model) == resnext29_params(c, d)
    if name == "resnext29_8x64d":
        assert round(n_params(model) / 1e6, 1) == 34.4  # Xie et al. Table 7
    for i, planes in enumerate((64, 128, 256), 1):
        stage = model.get_submodule(f"layer{i}")
        assert len(stage) == 3
        conv2 = stage[0].conv2
        assert conv2.groups == c and conv2.out_channels == c * d * planes // 64
        assert stage[-1].conv3.out_channels == 4 * planes
    assert model.num_features == 1024
    x = torch.randn(1, 3, 32, 32, device="meta")
    assert model.forward_features(x).shape == (1, 1024, 8, 8)


# --------------------------------------------------------------------------------------------------
# Input sizes, registry


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_min_input_size(name):
    cfg = cnnzoo.get_model_cfg(name)
    c, h, w = cfg["min_input_size"]
    assert (h, w) == (1, 1)
    model = ours(name).train()
    model.zero_grad()
    x = torch.randn(2, c, h, w, requires_grad=True)
    out = model(x)
    assert out.shape == (2, cfg["num_classes"]) and torch.isfinite(out).all()
    out.sum().backward()
    # Only the head's gradient is checked for finiteness: batch norm in training mode over two
    # values per channel divides by their (tiny) spread in every layer, so the gradients that reach
    # the early layers of the deep networks overflow, here as in torchvision's ResNet-101.
    assert x.grad is not None and torch.isfinite(model.fc.weight.grad).all()
    with pytest.raises(ValueError):
        model(torch.randn(2, c, h - 1, w - 1))


@pytest.mark.parametrize("name", ["plain20", "plain56", "resnet20", "resnet56", "resnet18_cifar", "seresnet20",
                                  "resnext29_8x16d", "resnet18"])
def test_grey_28x28(name):
    """The degradation experiment's inputs: Fashion-MNIST, 1x28x28."""
    model = cnnzoo.create_model(name, in_chans=1, num_classes=10).eval()
    with torch.no_grad():
        x = model.forward_features(torch.randn(2, 1, 28, 28))
        if name != "resnet18":  # no ImageNet stem: 28 -> 28 -> 14 -> 7
            assert x.shape[-2:] == ((7, 7) if name != "resnet18_cifar" else (4, 4))
        assert model.forward_head(x).shape == (2, 10)


@pytest.mark.parametrize("name,batch,steps", [
    ("resnet20", 32, 15),
    pytest.param("resnet18_cifar", 8, 8, marks=pytest.mark.slow),  # 0.56 GMAC per image: fewer images
])
def test_cifar_variant_trains(name, batch, steps):
    losses = sgd_losses(name, batch=batch, steps=steps, lr=0.05)
    assert losses[-1] < 0.5 * losses[0], losses


def test_registry_names_and_cfgs():
    assert set(FAMILY_NAMES) <= set(cnnzoo.list_models())
    assert cnnzoo.list_models("resnet*") == sorted(n for n in FAMILY_NAMES if n.startswith("resnet"))
    assert cnnzoo.list_models("plain*") == sorted(f"plain{d}" for d in CIFAR_N)
    assert {"seresnet20", "seresnet18_cifar", "seresnext50_32x4d"} <= set(cnnzoo.list_models("se*"))
    for name in FAMILY_NAMES:
        cfg = cnnzoo.get_model_cfg(name)
        assert cfg["family"] in ("ResNet", "ResNeXt", "SENet")
        small = cfg["small_variant"]
        assert small in FAMILY_NAMES and cnnzoo.get_model_cfg(small)["input_size"] == (3, 32, 32)
        if name in TORCHVISION:
            assert cfg["reference"] == f"torchvision:{name}"
        elif name in TIMM:
            assert cfg["reference"] == f"timm:{name}"
        else:
            assert cfg["reference"] is None and cfg["input_size"] == (3, 32, 32)


def test_bad_arguments():
    with pytest.raises(ValueError):
        ResNet(BasicBlock, [1, 1], widths=(16, 32, 64))
    with pytest.raises(ValueError):
        cnnzoo.create_model("resnet20", shortcut="C")
    with pytest.raises(ValueError):
        cnnzoo.create_model("resnet18", groups=32)  # BasicBlock has no grouped form
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnnzoo.create_model("resnet20", num_classes=1)
