import ast
import copy
import math
import pickle
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import cnnzoo
from cnnzoo.models import registry
from cnnzoo.models.checkpoint import load_checkpoint
from cnnzoo.models.registry import get_pretrained_cfg
from cnnzoo.models.weights import adapt_first_conv, read_state_dict
from cnnzoo.training.config import TrainConfig
from cnnzoo.training.loop import train


def nparams(m):
    return sum(p.numel() for p in m.parameters())


def test_list_models_wildcards_sorted():
    names = cnnzoo.list_models()
    assert names == sorted(names) and "lenet5" in names
    assert cnnzoo.list_models("lenet*") == ["lenet5", "lenet5_caffe", "lenet_300_100"]
    assert cnnzoo.list_models("no-such-*") == []


def test_unknown_model_suggests_close_matches():
    with pytest.raises(ValueError, match="unknown model 'lenet-5'.*Did you mean: lenet5"):
        cnnzoo.create_model("lenet-5")


# num_classes=0 is timm's "no classifier" (tests/models/test_timm_api.py).
@pytest.mark.parametrize("kw, low", [({"in_chans": 0}, 1), ({"num_classes": -3}, 0), ({"num_classes": 2.0}, 0)])
def test_bad_sizes_rejected(kw, low):
    with pytest.raises(ValueError, match=f"must be an integer >= {low}"):
        cnnzoo.create_model("lenet5", **kw)


def test_lenet5_layer_table():
    m = cnnzoo.create_model("lenet5")
    assert m.default_cfg["input_size"] == (1, 32, 32) and m.default_cfg["num_classes"] == 10
    assert nparams(m) == 61706  # C1 156 + C3 2416 + C5 48120 + F6 10164 + output 850
    x = torch.randn(2, 1, 32, 32)
    shapes = {}
    for name in ("c1", "s2", "c3", "s4", "c5", "f6", "output"):
        getattr(m, name).register_forward_hook(lambda mod, i, o, name=name: shapes.update({name: tuple(o.shape[1:])}))
    assert m(x).shape == (2, 10)
    assert shapes == {"c1": (6, 28, 28), "s2": (6, 14, 14), "c3": (16, 10, 10), "s4": (16, 5, 5),
                      "c5": (120, 1, 1), "f6": (84,), "output": (10,)}
    paper = cnnzoo.create_model("lenet5", act="tanh", pool="avg")
    assert isinstance(paper.act, torch.nn.Tanh) and isinstance(paper.s2, torch.nn.AvgPool2d)
    with pytest.raises(ValueError, match="act must be one of"):
        cnnzoo.create_model("lenet5", act="gelu")


def test_lenet_mlp_and_caffe_counts():
    assert nparams(cnnzoo.create_model("lenet_300_100")) == 266610
    assert nparams(cnnzoo.create_model("lenet5_caffe")) == 431080


def test_wrong_input_size_is_a_clear_error():
    m = cnnzoo.create_model("lenet5")
    with pytest.raises(ValueError, match="lenet5 takes exactly 32x32 inputs, got 28x28"):
        m(torch.randn(1, 1, 28, 28))
    with pytest.raises(ValueError, match="built for 1 input channels, got 3"):
        m(torch.randn(1, 3, 32, 32))


def test_model_interface():
    m = cnnzoo.create_model("lenet5", num_classes=7)
    x = torch.randn(3, 1, 32, 32)
    feats = m.forward_features(x)
    assert m.forward_head(feats, pre_logits=True).shape == (3, 84)
    assert m.get_classifier().out_features == 7
    m.reset_classifier(4)
    assert m(x).shape == (3, 4) and m.default_cfg["num_classes"] == 4


@pytest.mark.parametrize("fmt", ["safetensors", "pth"])
def test_pretrained_roundtrip_and_adaptation(tmp_path, fmt):
    torch.manual_seed(0)
    src = cnnzoo.create_model("lenet5", in_chans=3, num_classes=10).eval()
    path = tmp_path / f"w.{fmt}"
    if fmt == "safetensors":
        save_file(src.state_dict(), path)
    else:
        torch.save({"state_dict": src.state_dict()}, path)
    x = torch.randn(2, 3, 32, 32)
    same = cnnzoo.create_model("lenet5", in_chans=3, num_classes=10, pretrained=path).eval()
    assert torch.equal(same(x), src(x))
    grey = cnnzoo.create_model("lenet5", in_chans=1, num_classes=10, pretrained=path).eval()
    g = torch.randn(2, 1, 32, 32)
    assert torch.allclose(grey(g), src(g.repeat(1, 3, 1, 1)), atol=1e-5)
    six = cnnzoo.create_model("lenet5", in_chans=6, num_classes=10, pretrained=path).eval()
    assert torch.allclose(six(x.repeat(1, 2, 1, 1)), src(x), atol=1e-5)
    with pytest.warns(UserWarning, match="freshly initialised"):
        other = cnnzoo.create_model("lenet5", in_chans=3, num_classes=4, pretrained=path).eval()
    assert torch.allclose(other.forward_head(other.forward_features(x), pre_logits=True),
                          src.forward_head(src.forward_features(x), pre_logits=True))


def test_adapt_first_conv_rules():
    w = torch.randn(4, 3, 3, 3)
    assert torch.allclose(adapt_first_conv(w, 1), w.sum(1, keepdim=True))
    w5 = adapt_first_conv(w, 5)
    assert w5.shape == (4, 5, 3, 3) and torch.allclose(w5[:, 3], w[:, 0] * 3 / 5)


def test_weights_of_another_architecture_name_the_keys(tmp_path):
    save_file(cnnzoo.create_model("lenet5_caffe").state_dict(), tmp_path / "caffe.safetensors")
    with pytest.raises(ValueError, match=r"does not fit model lenet5.*missing \d+ keys \(e.g. c1.bias"):
        cnnzoo.create_model("lenet5", pretrained=tmp_path / "caffe.safetensors")


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/cnnzoo-pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    import os

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"c1.weight": _Exploit()}, f)
    if os.path.exists("/tmp/cnnzoo-pwned"):
        os.remove("/tmp/cnnzoo-pwned")
    with pytest.raises(ValueError, match="refused or unreadable.*never unpickles"):
        read_state_dict(path)
    assert not os.path.exists("/tmp/cnnzoo-pwned")


def test_imports_run_one_way():
    """The registry and the weight-file module import no model family; every family's module imports
    the registry. (Any cnnzoo import runs cnnzoo/__init__.py, which imports the families.)"""
    models = Path(cnnzoo.__file__).parent / "models"
    families = ("lenet", "alexnet", "vgg", "inception", "resnet", "mobilenet")

    def imported(path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        names = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        return names | {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}

    for module in ("registry.py", "weights.py"):
        assert not {m for m in imported(models / module) if m.split(".")[-1] in families}, module
    for family in families:
        assert "cnnzoo.models.registry" in imported(models / f"{family}.py"), family
    assert not hasattr(registry, "is_model")


def test_tags_pick_their_configuration():
    assert registry.list_tags("resnet50") == ["tv_in1k", "tv2_in1k"] and registry.list_tags("lenet5") == [""]
    assert get_pretrained_cfg("resnet50") == get_pretrained_cfg("resnet50.tv_in1k")
    assert get_pretrained_cfg("resnet50").crop_pct == 0.875
    with torch.device("meta"):
        model = cnnzoo.create_model("resnet50.tv2_in1k", num_classes=5)
    cfg = model.pretrained_cfg
    assert (cfg["architecture"], cfg["tag"], cfg["crop_pct"], cfg["num_classes"]) == ("resnet50", "tv2_in1k", 0.965, 5)
    assert cnnzoo.get_model_cfg("seresnet50.a3_in1k")["input_size"] == (3, 160, 160)
    with pytest.raises(ValueError, match=r"resnet50 has no tag 'tv3_in1k' \(its tags: tv_in1k, tv2_in1k\)"):
        cnnzoo.create_model("resnet50.tv3_in1k")
    with pytest.raises(ValueError, match="unknown model 'resnet5'"):
        get_pretrained_cfg("resnet5.tv_in1k")


def _tagged_names(source: str) -> list[str]:
    return [f"{n}.{t}" for n in cnnzoo.list_models() if (get_pretrained_cfg(n).reference or "").startswith(source)
            for t in registry.list_tags(n) if t]


@pytest.mark.parametrize("name", _tagged_names("torchvision:"))
def test_torchvision_tags_preprocess_as_its_weights(name):
    """A tv_in1k / tv2_in1k configuration resizes and crops as torchvision's IMAGENET1K_V1 / V2
    weights do (timm's eval transform resizes the shorter side to floor(size / crop_pct))."""
    cfg = get_pretrained_cfg(name)
    weights = torchvision.models.get_model_weights(cfg.reference.split(":")[1])
    enum = {"tv_in1k": "IMAGENET1K_V1", "tv2_in1k": "IMAGENET1K_V2"}[cfg.tag]
    t = weights[enum].transforms()
    assert [cfg.input_size[1]] == list(t.crop_size)
    assert [math.floor(cfg.input_size[1] / cfg.crop_pct)] == list(t.resize_size)
    assert cfg.interpolation == t.interpolation.value


@pytest.mark.parametrize("name", _tagged_names("timm:"))
def test_timm_tags_preprocess_as_its_weights(name):
    timm = pytest.importorskip("timm")
    cfg = get_pretrained_cfg(name)
    timm_name = cfg.reference.split(":")[1]
    ref = timm.models.get_pretrained_cfg(f"{timm_name}.{cfg.tag}")
    is_default = registry.list_tags(cfg.architecture)[0] == cfg.tag
    assert is_default == (timm.models.get_pretrained_cfg(timm_name).tag == cfg.tag)
    for field in ("input_size", "crop_pct", "interpolation", "mean", "std", "test_input_size", "test_crop_pct"):
        assert getattr(cfg, field) == getattr(ref, field), field


def test_timm_data_config_for_every_registered_configuration():
    timm_data = pytest.importorskip("timm.data")
    for name in cnnzoo.list_models():
        for tag in registry.list_tags(name):
            cfg = get_pretrained_cfg(f"{name}.{tag}" if tag else name)
            data = timm_data.resolve_data_config(pretrained_cfg=cnnzoo.get_model_cfg(cfg.name))
            assert (data["input_size"], data["mean"], data["std"]) == (cfg.input_size, cfg.mean, cfg.std), cfg.name
            assert (data["crop_pct"], data["interpolation"]) == (cfg.crop_pct, cfg.interpolation), cfg.name


@pytest.mark.parametrize("name, size, crop_pct", [
    ("lenet5", (1, 32, 32), 1.0), ("inception_v3", (3, 299, 299), 299 / 342), ("resnet20", (3, 32, 32), 1.0),
    ("resnet50.tv2_in1k", (3, 224, 224), 0.965), ("vgg_airbench", (1, 28, 28), 1.0),
])
def test_timm_transforms_from_the_models_own_config(name, size, crop_pct):
    timm_data = pytest.importorskip("timm.data")
    from PIL import Image

    with torch.device("meta"):
        model = cnnzoo.create_model(name)
    data = timm_data.resolve_data_config(model=model)
    assert data["input_size"] == size and data["crop_pct"] == crop_pct
    assert len(data["mean"]) == len(data["std"]) == size[0]
    transform = timm_data.create_transform(**data)
    image = Image.new("L" if size[0] == 1 else "RGB", (size[2] + 37, size[1] + 11), color=128)
    assert tuple(transform(image).shape) == size


def test_configurations_are_never_edited_in_place(tmp_path):
    """reset_classifier, create_model with other sizes, training and loading a checkpoint give the
    model new config dicts; the registry's configurations and the dicts handed out stay as they were."""
    registered = copy.deepcopy(registry._CFGS)
    with torch.device("meta"):
        grey = cnnzoo.create_model("resnet20", in_chans=1, num_classes=3)
    given = grey.pretrained_cfg
    assert given["input_size"] == (1, 32, 32) and given["num_classes"] == 3 and len(given["mean"]) == 1
    grey.reset_classifier(4)
    assert grey.pretrained_cfg["num_classes"] == 4 and given["num_classes"] == 3
    assert grey.default_cfg is grey.pretrained_cfg
    with pytest.raises(ValueError, match="resnet20: no configuration field 'crop'"):
        grey.set_pretrained_cfg(crop=0.5)

    run = tmp_path / "run"
    train(TrainConfig(model="lenet5", dataset="synthetic", input_size=(1, 32, 32), epochs=1, batch_size=64,
                      train_subset=128, test_subset=64, synthetic_classes=3, out=str(run)), progress=False)
    model, meta = load_checkpoint(run)
    assert model.pretrained_cfg["mean"] == tuple(meta["mean"]) != get_pretrained_cfg("lenet5").mean
    assert model.pretrained_cfg["num_classes"] == 3
    assert registry._CFGS == registered
