"""The Inception family: GoogLeNet and Inception v3 against torchvision (parameter counts, weight
files in torchvision's / timm's layouts, logits), BN-Inception against its paper's layer table,
input-size limits, auxiliary heads, and the small-input variants' training."""
from __future__ import annotations

import warnings

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import cnnzoo
from cnnzoo.models.inception import GoogLeNetOutputs, InceptionV3, InceptionV3Outputs
from tests.helpers import sgd_losses

FAMILY = ["googlenet", "googlenet_cifar", "inception_v2", "inception_v2_cifar", "inception_v3", "inception_v3_cifar"]


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def tv_googlenet(aux_logits: bool = False, num_classes: int = 1000) -> nn.Module:
    return torchvision.models.googlenet(weights=None, aux_logits=aux_logits, init_weights=True, num_classes=num_classes)


def tv_inception_v3(aux_logits: bool = False) -> nn.Module:
    # init_weights=True (truncated normal over 24M weights) is slow and irrelevant here.
    return torchvision.models.inception_v3(weights=None, aux_logits=aux_logits, init_weights=False)


def randomise_bn(model: nn.Module) -> nn.Module:
    """Give every batch norm non-trivial statistics and affine parameters, so that a weight file
    loaded into the wrong place cannot hide behind running_mean=0, running_var=1."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def pooled_features(ref: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference's pre-logit features: its forward with the final linear layer removed."""
    fc, ref.fc = ref.fc, nn.Identity()
    try:
        with torch.no_grad():
            return ref(x)
    finally:
        ref.fc = fc


# ------------------------------------------------------------------------------------------------
# Registry


def test_list_models():
    assert cnnzoo.list_models("googlenet*") == ["googlenet", "googlenet_cifar"]
    assert cnnzoo.list_models("inception_v*") == FAMILY[2:]
    for name in FAMILY:
        cfg = cnnzoo.get_model_cfg(name)
        assert cfg["family"] == "Inception"
        assert cfg["min_input_size"][1] <= (28 if name.endswith("_cifar") else 299)
    assert cnnzoo.get_model_cfg("googlenet")["small_variant"] == "googlenet_cifar"
    assert cnnzoo.get_model_cfg("inception_v3")["input_size"] == (3, 299, 299)


# ------------------------------------------------------------------------------------------------
# Against torchvision: parameter counts


def test_param_counts_match_torchvision():
    assert n_params(cnnzoo.create_model("googlenet")) == n_params(tv_googlenet()) == 6_624_904
    assert n_params(cnnzoo.create_model("googlenet", aux_logits=True)) == n_params(tv_googlenet(True))
    assert n_params(cnnzoo.create_model("inception_v3")) == n_params(tv_inception_v3()) == 23_834_568
    assert n_params(cnnzoo.create_model("inception_v3", aux_logits=True)) == n_params(tv_inception_v3(True)) == 27_161_264


# ------------------------------------------------------------------------------------------------
# Against torchvision: weight files and logits


@pytest.mark.parametrize(
    "name, make_ref, size, suffix",
    [
        ("googlenet", tv_googlenet, 64, ".pth"),
        ("inception_v3", tv_inception_v3, 75, ".safetensors"),  # 75x75: v3's smallest input
    ],
)
def test_reference_weights_give_reference_logits(tmp_path, name, make_ref, size, suffix):
    torch.manual_seed(0)
    ref = randomise_bn(make_ref())
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file(ref.state_dict(), str(path))
    else:
        torch.save(ref.state_dict(), path)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref_logits = ref(x)

    model = cnnzoo.create_model(name, pretrained=path).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref_logits, atol=1e-5, rtol=0)

    # Another class count: the classifier stays fresh, the features are the reference's.
    with pytest.warns(UserWarning, match="classifier"):
        model = cnnzoo.create_model(name, pretrained=path, num_classes=7).eval()
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        assert model(x).shape == (2, 7)
    torch.testing.assert_close(feats, pooled_features(ref, x), atol=1e-5, rtol=0)

    # One input channel: the first convolution sums the file's RGB filters.
    model = cnnzoo.create_model(name, pretrained=path, in_chans=1).eval()
    x1 = torch.randn(2, 1, size, size)
    with torch.no_grad():
        torch.testing.assert_close(model(x1), ref(x1.repeat(1, 3, 1, 1)), atol=1e-4, rtol=0)


def test_timm_inception_v3_weights_load(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = randomise_bn(timm.create_model("inception_v3", pretrained=False))
    path = tmp_path / "timm_inception_v3.pth"
    torch.save(ref.state_dict(), path)
    model = cnnzoo.create_model("inception_v3", pretrained=path).eval()
    x = torch.randn(1, 3, 75, 75)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------
# Auxiliary classifiers


def test_googlenet_aux_heads_match_torchvision(tmp_path):
    torch.manual_seed(0)
    ref = randomise_bn(tv_googlenet(aux_logits=True))
    path = tmp_path / "googlenet_aux.pth"
    torch.save(ref.state_dict(), path)
    model = cnnzoo.create_model("googlenet", pretrained=path, aux_logits=True)
    for m in (ref, model):
        m.train()
        for mod in m.modules():
            if isinstance(mod, nn.Dropout):
                mod.p = 0.0  # compare deterministic outputs
    x = torch.randn(2, 3, 64, 64)
    out, ref_out = model(x), ref(x)
    assert isinstance(out, GoogLeNetOutputs)
    for ours, theirs in zip(out, ref_out):  # (logits, aux_logits2, aux_logits1)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    model.eval()
    with torch.no_grad():
        assert isinstance(model(x), torch.Tensor)
    model.reset_classifier(5)
    assert model.fc.out_features == model.aux1.fc2.out_features == model.aux2.fc2.out_features == 5


@pytest.mark.slow
def test_inception_v3_aux_head_matches_torchvision(tmp_path):
    torch.manual_seed(0)
    ref = randomise_bn(tv_inception_v3(aux_logits=True))
    path = tmp_path / "inception_v3_aux.pth"
    torch.save(ref.state_dict(), path)
    model = cnnzoo.create_model("inception_v3", pretrained=path, aux_logits=True)
    ref.train(), model.train()
    x = torch.randn(2, 3, 299, 299)
    with torch.no_grad():
        torch.manual_seed(1)
        ref_out = ref(x)
        torch.manual_seed(1)  # same dropout mask
        out = model(x)
    assert isinstance(out, InceptionV3Outputs)
    torch.testing.assert_close(out.logits, ref_out.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.aux_logits, ref_out.aux_logits, atol=1e-5, rtol=0)


def test_inception_v3_aux_head_refuses_small_grids():
    model = cnnzoo.create_model("inception_v3", aux_logits=True).train()
    with pytest.raises(ValueError, match="17x17"):
        model(torch.randn(2, 3, 75, 75))
    with pytest.raises(ValueError, match="17x17"):
        InceptionV3(small_input=True, aux_logits=True)


# ------------------------------------------------------------------------------------------------
# Against the papers' layer tables


def block_outputs(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        model.get_submodule(n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
        for n in names
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return shapes


def test_googlenet_layer_table():
    # Szegedy et al. 2014, Table 1: output size after each layer on a 224x224 input.
    table = {
        "stem.conv1": (64, 112, 112), "stem.pool1": (64, 56, 56), "stem.conv3": (192, 56, 56),
        "stem.pool2": (192, 28, 28), "inception3a": (256, 28, 28), "inception3b": (480, 28, 28),
        "pool3": (480, 14, 14), "inception4a": (512, 14, 14), "inception4b": (512, 14, 14),
        "inception4c": (512, 14, 14), "inception4d": (528, 14, 14), "inception4e": (832, 14, 14),
        "pool4": (832, 7, 7), "inception5a": (832, 7, 7), "inception5b": (1024, 7, 7),
    }
    model = cnnzoo.create_model("googlenet")
    assert block_outputs(model, list(table), torch.randn(1, 3, 224, 224)) == table


# Ioffe & Szegedy 2015, Fig. 5: #1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3, pool proj
# (0 where the module has no such branch: 3c and 4e pass the max pool through).
BN_INCEPTION_BRANCHES = {
    "inception3a": (64, 64, 64, 64, 96, 32),
    "inception3b": (64, 64, 96, 64, 96, 64),
    "inception3c": (0, 128, 160, 64, 96, 0),
    "inception4a": (224, 64, 96, 96, 128, 128),
    "inception4b": (192, 96, 128, 96, 128, 128),
    "inception4c": (160, 128, 160, 128, 160, 128),
    "inception4d": (96, 128, 192, 160, 192, 128),
    "inception4e": (0, 128, 192, 192, 256, 0),
    "inception5a": (352, 192, 320, 160, 224, 128),
    "inception5b": (352, 192, 320, 192, 224, 128),
}


def test_inception_v2_layer_table():
    model = cnnzoo.create_model("inception_v2")
    for name, (c1, c3r, c3, d3r, d3, proj) in BN_INCEPTION_BRANCHES.items():
        block = model.get_submodule(name)
        widths = (
            block["branch1x1"].conv.out_channels if c1 else 0,
            block["branch3x3"].reduce.conv.out_channels,
            block["branch3x3"].conv1.conv.out_channels,
            block["branch3x3dbl"].reduce.conv.out_channels,
            block["branch3x3dbl"].conv2.conv.out_channels,
            block["branch_pool"].proj.conv.out_channels if proj else 0,
        )
        assert widths == (c1, c3r, c3, d3r, d3, proj), name
    # Output sizes on 224x224: the sums of the branch columns (the figure's own output column says
    # 576 for 4c/4d and 1024 for 4e, which its branch columns contradict).
    table = {
        "stem": (192, 28, 28),
        "inception3a": (256, 28, 28), "inception3b": (320, 28, 28), "inception3c": (576, 14, 14),
        "inception4a": (576, 14, 14), "inception4b": (576, 14, 14), "inception4c": (608, 14, 14),
        "inception4d": (608, 14, 14), "inception4e": (1056, 7, 7),
        "inception5a": (1024, 7, 7), "inception5b": (1024, 7, 7),
    }
    with FlopCounterMode(display=False) as counter:
        shapes = block_outputs(model, list(table), torch.randn(1, 3, 224, 224))
    assert shapes == table
    assert 1.9e9 < counter.get_total_flops() / 2 < 2.1e9  # about 2.0 GMACs
    assert 11.1e6 < n_params(model) < 11.5e6  # about 11.3M with the 1000-way classifier


def test_inception_v3_layer_table():
    # The released Inception v3 on 299x299 (the module docstring's table).
    table = {
        "stem.conv1a": (32, 149, 149), "stem.conv2b": (64, 147, 147), "stem.conv4a": (192, 71, 71),
        "stem.pool2": (192, 35, 35), "mixed5b": (256, 35, 35), "mixed5d": (288, 35, 35),
        "mixed6a": (768, 17, 17), "mixed6e": (768, 17, 17), "mixed7a": (1280, 8, 8), "mixed7c": (2048, 8, 8),
    }
    model = cnnzoo.create_model("inception_v3")
    assert block_outputs(model, list(table), torch.randn(1, 3, 299, 299)) == table


# ------------------------------------------------------------------------------------------------
# Input sizes


@pytest.mark.parametrize("name", FAMILY)
def test_forward_backward_at_min_input_size(name):
    cfg = cnnzoo.get_model_cfg(name)
    _, h, w = cfg["min_input_size"]
    model = cnnzoo.create_model(name, num_classes=10).train()
    torch.manual_seed(0)
    out = model(torch.randn(2, 3, h, w))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="at least"):
        model(torch.randn(2, 3, h - 1, w))
    # The limit is the network's, not only check_input's: one pixel less really fails.
    with pytest.raises(RuntimeError):
        model.eval().forward_head(model.forward_features(torch.randn(1, 3, h - 1, w - 1)))


@pytest.mark.parametrize("name", [n for n in FAMILY if n.endswith("_cifar")])
@pytest.mark.parametrize("size", [28, 32])
def test_small_variants_on_grey_images(name, size):
    model = cnnzoo.create_model(name, in_chans=1, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, size, size)).shape == (2, 10)


# ------------------------------------------------------------------------------------------------
# Training


@pytest.mark.slow
def test_small_variant_trains():
    # Memorising 16 random labels: a check that gradients flow through every branch, cheap enough
    # for CI (inception_v2_cifar and inception_v3_cifar train likewise, at 1.5x and 2.6x the cost).
    losses = sgd_losses("googlenet_cifar", batch=16, steps=12, lr=0.2)
    assert min(losses[-3:]) < 0.5 * losses[0], losses


def test_googlenet_cifar_aux_heads_train():
    model = cnnzoo.create_model("googlenet_cifar", in_chans=1, num_classes=10, aux_logits=True).train()
    out = model(torch.randn(4, 1, 28, 28))
    assert isinstance(out, GoogLeNetOutputs) and all(t.shape == (4, 10) for t in out)
    y = torch.randint(0, 10, (4,))
    loss = nn.functional.cross_entropy(out.logits, y) + 0.3 * sum(
        nn.functional.cross_entropy(a, y) for a in (out.aux_logits1, out.aux_logits2)
    )
    loss.backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.eval()(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name,tv_name", [("googlenet", "googlenet"), ("inception_v3", "inception_v3")])
def test_reference_file_with_aux_heads_loads_with_or_without_them(tmp_path, name, tv_name):
    import torchvision

    torch.manual_seed(0)
    ref = getattr(torchvision.models, tv_name)(weights=None, aux_logits=True, init_weights=False).eval()
    path = tmp_path / "ref.pth"
    torch.save(ref.state_dict(), path)
    size = 299 if name == "inception_v3" else 64
    x = torch.randn(1, 3, size, size)
    plain = cnnzoo.create_model(name, pretrained=path).eval()
    with torch.no_grad():
        assert torch.allclose(plain(x), ref(x), atol=1e-5)
    with pytest.warns(UserWarning, match="freshly initialised"):
        five = cnnzoo.create_model(name, num_classes=5, aux_logits=True, pretrained=path)
    assert five.get_classifier().out_features == 5


def test_cifar_googlenet_stem_stride_halves_every_stage():
    model = cnnzoo.create_model("googlenet_cifar", stem_stride=2, in_chans=1, num_classes=10)
    maps = model.forward_intermediates(torch.randn(2, 1, 28, 28), intermediates_only=True)
    assert [m.shape[-1] for m in maps] == [14, 7, 4]
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8]
    plain = cnnzoo.create_model("googlenet_cifar", in_chans=1, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in plain.parameters())
    with pytest.raises(ValueError, match="stem_stride must be 1 or 2 and only with small_input=True, got 3"):
        cnnzoo.create_model("googlenet_cifar", stem_stride=3)
    with pytest.raises(ValueError, match="only with small_input=True, got 2"):
        cnnzoo.create_model("googlenet", stem_stride=2)
