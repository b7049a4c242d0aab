import pickle

import pytest
import torch
from safetensors.torch import save_file

import cnnzoo
from cnnzoo.registry import adapt_first_conv, read_state_dict


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


# num_classes=0 is timm's "no classifier" (tests/test_timm_api.py).
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
