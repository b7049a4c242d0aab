"""Checks that hold for every registered model (built on the meta device: shapes only, no memory)."""
import fnmatch

import pytest
import torch

import cnnzoo
from cnnzoo.models.registry import get_model_cfg, get_pretrained_cfg, list_tags

ALL = cnnzoo.list_models()


def test_every_family_has_a_small_input_variant():
    families = {get_model_cfg(n)["family"] for n in ALL}
    assert {"LeNet", "AlexNet", "ZFNet", "VGG", "Inception", "ResNet", "ResNeXt", "SENet", "MobileNet"} <= families
    for family in families - {"LeNet"}:  # LeNet-5 is a 32x32 network already
        names = [n for n in ALL if get_model_cfg(n)["family"] == family]
        assert fnmatch.filter(names, "*_cifar") or fnmatch.filter(names, "*29_*") or fnmatch.filter(names, "*20"), family


@pytest.mark.parametrize("name", ALL)
def test_registry_entry_is_complete(name):
    cfg = get_model_cfg(name)
    assert cfg["paper"] and 1990 < cfg["year"] < 2030
    assert cfg["small_variant"] in ALL
    small = get_model_cfg(cfg["small_variant"])
    assert max(small["min_input_size"][1:]) <= 28 or small["fixed_input_size"]
    ref = cfg["reference"]
    assert ref is None or ref.split(":")[0] in ("torchvision", "timm")
    assert all(m <= d for m, d in zip(cfg["min_input_size"], cfg["input_size"]))


@pytest.mark.parametrize("name", ALL)
def test_grey_input_and_any_class_count(name):
    cfg = get_model_cfg(name)
    with torch.device("meta"):
        model = cnnzoo.create_model(name, in_chans=1, num_classes=3).eval()
        x = torch.empty(2, 1, *cfg["input_size"][1:])
        assert model(x).shape == (2, 3)
    assert model.get_classifier().out_features == 3
    assert model.pretrained_cfg["input_size"][0] == 1 and len(model.pretrained_cfg["mean"]) == 1


@pytest.mark.parametrize("name", ALL)
def test_config_describes_the_built_model(name):
    """pool_size (the feature map at the configuration's input size), first_conv and classifier of
    every configuration of ``name`` (each tag) are the built model's."""
    with torch.device("meta"):
        model = cnnzoo.create_model(name).eval()
        for tag in list_tags(name):
            cfg = get_pretrained_cfg(f"{name}.{tag}" if tag else name)
            features = model.forward_features(torch.empty(1, *cfg.input_size))
            pool = tuple(features.shape[-2:]) if features.dim() == 4 else None
            assert (cfg.pool_size, cfg.first_conv, cfg.classifier) == (pool, model.first_conv, model.classifier_name)
