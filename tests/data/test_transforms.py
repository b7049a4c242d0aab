"""cnnzoo.data.transforms.eval_transform against torchvision's published weights' transforms()."""
import pytest
import torch
import torchvision.models as tvm

from cnnzoo.data.transforms import eval_transform, resize_size
from cnnzoo.models.registry import get_pretrained_cfg

# (our configuration, torchvision's weights) with the same published preprocessing.
PAIRS = [
    ("resnet50.tv_in1k", tvm.ResNet50_Weights.IMAGENET1K_V1),
    ("resnet50.tv2_in1k", tvm.ResNet50_Weights.IMAGENET1K_V2),
    ("mobilenet_v2.tv2_in1k", tvm.MobileNet_V2_Weights.IMAGENET1K_V2),
    ("inception_v3.tv_in1k", tvm.Inception_V3_Weights.IMAGENET1K_V1),
    ("googlenet.tv_in1k", tvm.GoogLeNet_Weights.IMAGENET1K_V1),
]
# Landscape, portrait, square, smaller than the crop (upsampled), odd sizes.
SIZES = [(375, 500), (640, 427), (224, 224), (120, 90), (333, 1001)]


def transform_input(x, mean, std):
    """What torchvision's GoogLeNet / Inception v3 do first with transform_input=True: ImageNet-
    normalised input to mean = std = 0.5, which our models are registered with instead."""
    mean, std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    return (x * std + mean - 0.5) / 0.5


@pytest.mark.parametrize("name,weights", PAIRS, ids=[p[0] for p in PAIRS])
def test_eval_transform_matches_torchvision(name, weights):
    ours, theirs = eval_transform(get_pretrained_cfg(name)), weights.transforms()
    g = torch.Generator().manual_seed(0)
    for h, w in SIZES:
        img = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        a, b = ours(img), theirs(img)
        if name.startswith(("googlenet", "inception_v3")):
            b = transform_input(b, theirs.mean, theirs.std)
        assert a.shape == b.shape == (3, *theirs.crop_size * 2)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_eval_transform_from_a_model_dict_and_bicubic():
    from cnnzoo.models.factory import create_model

    with torch.device("meta"):
        model = create_model("seresnet50.a3_in1k")
    t = eval_transform(model.pretrained_cfg)
    assert t.resize_size == 168 and t.crop_size == [160, 160] and t.interpolation == "bicubic"
    out = t(torch.randint(0, 256, (3, 200, 300), dtype=torch.uint8))
    assert out.shape == (3, 160, 160) and out.dtype == torch.float32


def test_resize_size_and_bad_input():
    assert resize_size((3, 299, 299), 299 / 342) == 342
    assert resize_size((3, 224, 224), 0.965) == 232
    assert resize_size((3, 224, 320), 0.875) == (256, 365)
    t = eval_transform(get_pretrained_cfg("resnet18"))
    with pytest.raises(ValueError, match="uint8"):
        t(torch.zeros(3, 50, 50))
    with pytest.raises(ValueError, match="3 channels, got 1"):
        t(torch.zeros(1, 50, 50, dtype=torch.uint8))
    with pytest.raises(ValueError, match="crop_pct"):
        eval_transform({"input_size": (3, 8, 8), "crop_pct": 0, "interpolation": "bilinear",
                        "mean": (0,) * 3, "std": (1,) * 3})
