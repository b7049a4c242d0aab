"""AlexNet (against torchvision's alexnet), ZFNet (against the paper's Fig. 3) and alexnet_cifar."""
from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import cnnzoo
from cnnzoo.models.registry import get_model_cfg
from tests.helpers import assert_min_input_is_true_minimum, sgd_losses

ALL = ["alexnet", "alexnet_cifar", "zfnet", "zfnet_cifar"]


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def output_shapes(model: torch.nn.Module, names: list[str], x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Per-layer output shapes (without the batch dimension) of one forward pass."""
    shapes: dict[str, tuple[int, ...]] = {}

    def record(name: str):
        return lambda _module, _inputs, out: shapes.__setitem__(name, tuple(out.shape[1:]))

    hooks = [model.get_submodule(n).register_forward_hook(record(n)) for n in names]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


# --------------------------------------------------------------------------------------------------
# AlexNet against torchvision


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """torchvision's alexnet, randomly initialised, with its state_dict as .pth and .safetensors."""
    torch.manual_seed(0)
    ref = torchvision.models.alexnet(weights=None).eval()
    folder = tmp_path_factory.mktemp("alexnet")
    state = ref.state_dict()
    torch.save(state, folder / "alexnet.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "alexnet.safetensors"))
    return ref, folder


def _ref_pre_logits(ref: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return ref.classifier[:-1](torch.flatten(ref.avgpool(ref.features(x)), 1))


def test_alexnet_param_count(reference):
    ref, _ = reference
    assert n_params(cnnzoo.create_model("alexnet")) == n_params(ref) == 61_100_840


@pytest.mark.parametrize("suffix", ["pth", "safetensors"])
def test_alexnet_loads_torchvision_weights(reference, suffix):
    ref, folder = reference
    model = cnnzoo.create_model("alexnet", pretrained=folder / f"alexnet.{suffix}").eval()
    torch.manual_seed(1)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=0)


def test_alexnet_other_num_classes_keeps_features(reference):
    ref, folder = reference
    with pytest.warns(UserWarning, match="classifier"):
        model = cnnzoo.create_model("alexnet", num_classes=7, pretrained=folder / "alexnet.pth").eval()
    torch.manual_seed(2)
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        assert model(x).shape == (2, 7)
        ours = model.forward_head(model.forward_features(x), pre_logits=True)
        torch.testing.assert_close(ours, _ref_pre_logits(ref, x), atol=1e-5, rtol=0)


def test_alexnet_grey_input_adapts_first_conv(reference):
    ref, folder = reference
    model = cnnzoo.create_model("alexnet", in_chans=1, pretrained=folder / "alexnet.pth").eval()
    torch.manual_seed(3)
    x1 = torch.randn(2, 1, 112, 112)
    with torch.no_grad():
        torch.testing.assert_close(model(x1), ref(x1.repeat(1, 3, 1, 1)), atol=1e-4, rtol=0)


def test_alexnet_layer_table():
    # torchvision's single-GPU AlexNet at 224x224.
    model = cnnzoo.create_model("alexnet").eval()
    names = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]
    shapes = output_shapes(model, names, torch.randn(1, 3, 224, 224))
    assert shapes == {
        "conv1": (64, 55, 55), "pool1": (64, 27, 27), "conv2": (192, 27, 27), "pool2": (192, 13, 13),
        "conv3": (384, 13, 13), "conv4": (256, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6),
        "fc6": (4096,), "fc7": (4096,), "fc8": (1000,),
    }


# --------------------------------------------------------------------------------------------------
# ZFNet against Zeiler & Fergus 2013, Fig. 3


def test_zfnet_fig3_layer_table():
    model = cnnzoo.create_model("zfnet").eval()
    names = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]
    shapes = output_shapes(model, names, torch.randn(1, 3, 224, 224))
    assert shapes == {
        "conv1": (96, 110, 110), "pool1": (96, 55, 55),
        "conv2": (256, 26, 26), "pool2": (256, 13, 13),
        "conv3": (384, 13, 13), "conv4": (384, 13, 13), "conv5": (256, 13, 13), "pool5": (256, 6, 6),
        "fc6": (4096,), "fc7": (4096,), "fc8": (1000,),
    }
    # Filter sizes and strides of Fig. 3.
    assert model.conv1.weight.shape == (96, 3, 7, 7) and model.conv1.stride == (2, 2)
    assert model.conv2.weight.shape == (256, 96, 5, 5) and model.conv2.stride == (2, 2)
    assert model.conv3.weight.shape == (384, 256, 3, 3)
    assert model.conv4.weight.shape == (384, 384, 3, 3)
    assert model.conv5.weight.shape == (256, 384, 3, 3)
    assert model.fc6.weight.shape == (4096, 6 * 6 * 256)
    # Weights + biases of those layers: 14,208 + 614,656 + 885,120 + 1,327,488 + 884,992
    # + 37,752,832 + 16,781,312 + 4,097,000.
    assert n_params(model) == 62_357_608
    # Contrast normalisation has no parameters: leaving it out changes no count.
    assert n_params(cnnzoo.create_model("zfnet", lrn=False)) == 62_357_608


def test_zfnet_adapts_to_grey_and_classes():
    model = cnnzoo.create_model("zfnet", in_chans=1, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 10)
    assert model.conv1.weight.shape == (96, 1, 7, 7)


# --------------------------------------------------------------------------------------------------
# alexnet_cifar


def test_alexnet_cifar_layer_table():
    model = cnnzoo.create_model("alexnet_cifar", in_chans=1, num_classes=10).eval()
    names = ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]
    assert output_shapes(model, names, torch.randn(1, 1, 28, 28)) == {
        "conv1": (64, 28, 28), "pool1": (64, 14, 14), "conv2": (192, 14, 14), "pool2": (192, 7, 7),
        "conv3": (384, 7, 7), "conv4": (256, 7, 7), "conv5": (256, 7, 7), "pool5": (256, 3, 3),
        "fc6": (1024,), "fc7": (1024,), "fc8": (10,),
    }
    assert output_shapes(model, ["pool1", "pool2", "pool5"], torch.randn(1, 1, 32, 32)) == {
        "pool1": (64, 16, 16), "pool2": (192, 8, 8), "pool5": (256, 3, 3),
    }
    # Convolutions without bias (batch norm follows), BN scale + shift, then three linear layers.
    convs = 1 * 64 * 25 + 64 * 192 * 25 + 192 * 384 * 9 + 384 * 256 * 9 + 256 * 256 * 9
    bns = 2 * (64 + 192 + 384 + 256 + 256)
    fcs = (256 * 9 * 1024 + 1024) + (1024 * 1024 + 1024) + (1024 * 10 + 10)
    assert n_params(model) == convs + bns + fcs == 5_869_386
    assert get_model_cfg("alexnet_cifar")["input_size"] == (3, 32, 32)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["alexnet_cifar", "zfnet_cifar"])
def test_cifar_variant_trains_on_grey_28x28(name):
    losses = sgd_losses(name, batch=16, steps=12, lr=0.02)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-3:]) < 0.8 * losses[0], losses


# --------------------------------------------------------------------------------------------------
# Every model: smallest input, registry


@pytest.mark.parametrize("name", ALL)
def test_min_input_size_is_the_true_minimum(name):
    assert_min_input_is_true_minimum(name)


def test_registry():
    assert cnnzoo.list_models("alexnet*") == ["alexnet", "alexnet_cifar"]
    assert cnnzoo.list_models("zfnet*") == ["zfnet", "zfnet_cifar"]
    assert get_model_cfg("alexnet")["family"] == "AlexNet"
    assert get_model_cfg("alexnet")["reference"] == "torchvision:alexnet"
    assert get_model_cfg("zfnet")["family"] == "ZFNet"
    assert get_model_cfg("zfnet")["reference"] is None
    for name in ALL:
        assert get_model_cfg(name)["small_variant"] == name.split("_")[0] + "_cifar"
    with pytest.raises(ValueError, match="alexnet_cifar"):
        cnnzoo.create_model("alexnet")(torch.randn(1, 3, 32, 32))


def test_cifar_width_mult_scales_the_five_convolutions():
    zf = cnnzoo.create_model("zfnet_cifar", width_mult=0.375, in_chans=1)
    widths = [getattr(zf, f"conv{i}").conv.out_channels for i in range(1, 6)]
    assert widths == [36, 96, 144, 144, 96]  # ZFNet's 96-256-384-384-256, times 0.375
    assert zf.conv1.conv.kernel_size == (3, 3) and zf(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    alex = cnnzoo.create_model("alexnet_cifar", width_mult=0.5)
    assert [alex.conv1.conv.out_channels, alex.conv5.conv.out_channels] == [32, 128]
    with pytest.raises(ValueError, match="width_mult must be > 0, got -1"):
        cnnzoo.create_model("alexnet_cifar", width_mult=-1)
