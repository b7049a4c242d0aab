"""Published weights by name (cnnzoo.models.hub): files served from 127.0.0.1, the caches, hashes, class names.

The files are state dicts of real small networks saved in torchvision's and timm's key layouts,
named as the references name theirs; the catalogue is pointed at them, the download bases at a
local HTTP server (tests/hfserver.py; CNNZOO_WEIGHTS_URL, HF_ENDPOINT), and the caches at tmp_path.
"""
import dataclasses
import hashlib
import json

import pytest
import torch
from PIL import Image

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.models import hub
from cnnzoo.models.factory import create_model
from tests.hfserver import HubServer


def _torchvision_file(tmp_path):
    """mobilenet_v2 in torchvision's layout, named <model>-<sha256 prefix>.pth as torchvision names files."""
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.mobilenet_v2().eval()
    path = tmp_path / "tv.pth"
    torch.save(ref.state_dict(), path)
    data = path.read_bytes()
    return ref, data, f"mobilenet_v2-{hashlib.sha256(data).hexdigest()[:8]}.pth"


def _timm_file(tmp_path):
    """timm's mobilenetv1_100 as model.safetensors, as its hub repository holds it."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    ref = timm.create_model("mobilenetv1_100", pretrained=False).eval()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    return ref, path.read_bytes()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("published")
    tv_ref, tv_bytes, tv_name = _torchvision_file(d)
    timm_ref, timm_bytes = _timm_file(d)
    return dict(tv_ref=tv_ref, tv_bytes=tv_bytes, tv_name=tv_name, timm_ref=timm_ref, timm_bytes=timm_bytes)


@pytest.fixture
def server():
    s = HubServer()
    yield s
    s.stop()


@pytest.fixture
def published(files, server, tmp_path, monkeypatch):
    """The catalogue's mobilenet_v2 and mobilenet_v1 entries pointed at our files, served locally."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv(hub.MIRROR_ENV, server.url + "/models")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    real = {w.name: w for w in hub._catalogue()}
    tv = dataclasses.replace(real["mobilenet_v2.tv_in1k"], file=files["tv_name"], sha256=files["tv_name"][13:21],
                             url=f"https://download.pytorch.org/models/{files['tv_name']}")
    tm = real["mobilenet_v1.ra4_e3600_r224_in1k"]
    monkeypatch.setattr(hub, "_catalogue", lambda: (tv, real["mobilenet_v2.tv2_in1k"], tm))
    server.files[f"/models/{tv.file}"] = files["tv_bytes"]
    server.files[f"/{tm.hf_hub_id}/resolve/main/{tm.file}"] = files["timm_bytes"]
    return dict(tv=tv, timm=tm, server=server, checkpoints=tmp_path / "torch" / "hub" / "checkpoints")


def test_catalogue_covers_every_reference_with_published_facts():
    entries = {w.name: w for w in hub.list_weights()}
    for name in ("alexnet", "vgg11", "vgg19_bn", "googlenet", "inception_v3", "resnet18", "resnet152",
                 "resnext50_32x4d", "resnext101_32x8d", "mobilenet_v2"):
        w = entries[f"{name}.tv_in1k"]
        assert w.url == f"https://download.pytorch.org/models/{w.file}" and w.sha256 in w.file and w.top1 > 50
    r50 = hub.find_weights("resnet50", "IMAGENET1K_V2")
    assert (r50.file, r50.top1, r50.tag) == ("resnet50-11ad3fa6.pth", 80.858, "tv2_in1k")
    assert hub.find_weights("resnet50").tag == "tv_in1k"  # the registry's default tag
    assert cnnzoo.list_pretrained("resnet50*") == ["resnet50.tv2_in1k", "resnet50.tv_in1k"]
    assert hub.find_weights("seresnet50", "a1_in1k").hf_hub_id == "timm/seresnet50.a1_in1k"
    assert entries["mobilenet_v1.ra4_e3600_r224_in1k"].license == "apache-2.0"
    with pytest.raises(ValueError, match="its tags: tv_in1k .*tv2_in1k"):
        hub.find_weights("resnet50", "imagenet1k_v3")
    with pytest.raises(ValueError, match="no published weights for model 'lenet5'"):
        hub.find_weights("lenet5")
    names, wnids = hub.imagenet_classes(), hub.imagenet_wnids()
    assert len(names) == len(wnids) == 1000 and names[281] == "tabby" and wnids[0] == "n01440764"


def test_torchvision_file_downloads_into_torch_hub_cache_and_matches_reference(published, files):
    model = create_model("mobilenet_v2", pretrained=True).eval()
    path = published["checkpoints"] / files["tv_name"]
    assert path.read_bytes() == files["tv_bytes"]  # torchvision's folder, torchvision's exact name
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), files["tv_ref"](x), atol=1e-5, rtol=1e-5)
    cfg = model.pretrained_cfg
    assert cfg["tag"] == "tv_in1k" and cfg["file"] == str(path) and cfg["label_names"][281] == "tabby"
    assert cfg["sha256"] == hashlib.sha256(files["tv_bytes"]).hexdigest() and cfg["url"].endswith(files["tv_name"])
    assert hub.catalogue_row(published["tv"])["cached"]

    published["server"].stop()  # offline: the cached file is used as it is
    with pytest.warns(UserWarning, match="left freshly initialised"):
        again = create_model("mobilenet_v2.tv_in1k", pretrained=True, num_classes=7, in_chans=1)
    assert again.classifier.out_features == 7 and "label_names" not in again.pretrained_cfg
    first = f"{model.first_conv}.weight"
    torch.testing.assert_close(again.state_dict()[first], model.state_dict()[first].sum(1, keepdim=True))


def test_tag_aliases_and_tagged_names(published, files):
    m = create_model("mobilenet_v2", pretrained="IMAGENET1K_V1")
    assert m.pretrained_cfg["weights"] == "mobilenet_v2.tv_in1k"
    with pytest.raises(ValueError, match="disagree"):
        create_model("mobilenet_v2.tv2_in1k", pretrained="imagenet1k_v1")
    with pytest.raises(ValueError, match="neither a file nor a tag"):
        create_model("mobilenet_v2", pretrained="imagenet9k")
    # the reference's own file, given by path, is recognised by its published name
    direct = create_model("mobilenet_v2", pretrained=published["checkpoints"] / files["tv_name"])
    assert direct.pretrained_cfg["label_names"][0] == "tench" and direct.pretrained_cfg["sha256"]


def test_hash_mismatch_is_refused_with_both_hashes(published, files):
    body = files["tv_bytes"][:-4] + b"oops"
    published["server"].files[f"/models/{files['tv_name']}"] = body
    with pytest.raises(ValueError) as err:
        create_model("mobilenet_v2", pretrained=True)
    assert files["tv_name"][13:21] in str(err.value) and hashlib.sha256(body).hexdigest() in str(err.value)
    assert not published["checkpoints"].exists() or not any(published["checkpoints"].iterdir())


def test_interrupted_download_leaves_nothing(published, files):
    published["server"].truncate.add(f"/models/{files['tv_name']}")
    with pytest.raises((OSError, ValueError)):
        create_model("mobilenet_v2", pretrained=True)
    assert not published["checkpoints"].exists() or not any(published["checkpoints"].iterdir())


def test_offline_and_missing_names_url_file_and_folder(published, files):
    published["server"].stop()
    with pytest.raises(OSError) as err:
        create_model("mobilenet_v2", pretrained=True)
    msg = str(err.value)
    assert files["tv_name"] in msg and str(published["checkpoints"]) in msg and published["tv"].url in msg
    assert f"{published['server'].url}/models/{files['tv_name']}" in msg


def test_hub_file_through_huggingface_hub_cache(published, files, tmp_path):
    model = create_model("mobilenet_v1", pretrained=True).eval()
    cfg = model.pretrained_cfg
    assert cfg["hf_hub_id"] == "timm/mobilenetv1_100.ra4_e3600_r224_in1k" and str(tmp_path / "hf") in cfg["file"]
    assert cfg["sha256"] == hashlib.sha256(files["timm_bytes"]).hexdigest() and cfg["interpolation"] == "bicubic"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), files["timm_ref"](x), atol=1e-5, rtol=1e-5)
    published["server"].stop()  # cached: no request needed
    assert create_model("mobilenet_v1.ra4_e3600_r224_in1k", pretrained=True).pretrained_cfg["sha256"] == cfg["sha256"]


def test_hub_file_whose_hash_differs_from_the_hubs_is_refused(published, files):
    tm = published["timm"]
    published["server"].etags[f"/{tm.hf_hub_id}/resolve/main/{tm.file}"] = "0" * 64
    with pytest.raises(ValueError, match=f"{'0' * 64}.*refused"):
        create_model("mobilenet_v1", pretrained=True)


def test_predict_and_weights_commands(published, files, tmp_path, capsys):
    img = tmp_path / "cat.png"
    Image.new("RGB", (120, 90), (200, 120, 40)).save(img)
    assert main(["predict", "--model", "mobilenet_v2", "--pretrained", str(img), "--topk", "3", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    result = json.loads(out[-1])
    top = result[0]["top"]
    names = hub.imagenet_classes()
    assert len(top) == 3 and all(t["class"] == names[t["class_index"]] for t in top)
    assert f"  {top[0]['class']} {top[0]['prob']:.2f}" in out  # "tabby 0.61"-style lines

    assert main(["weights", "mobilenet*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    cached = {r["tag"]: r["cached"] for r in rows if r["model"] == "mobilenet_v2"}
    assert cached == {"tv_in1k": True, "tv2_in1k": False}

    assert main(["predict", str(img)]) == 2
    assert "--model NAME" in capsys.readouterr().err


def test_eval_on_an_imagenet_style_folder(published, files, tmp_path, capsys):
    """Folders named by WordNet id or class name map to the 1000 classes; scores come image by image."""
    root = tmp_path / "val"
    for folder in ("n01440764", "goldfish"):
        (root / folder).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (80 + 10 * i, 60), (30 * i, 90, 160)).save(root / folder / f"{i}.jpg")
    assert main(["eval", "--model", "mobilenet_v2", "--pretrained", "--dataset", "imagefolder",
                 "--data-dir", str(root), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["images"] == 4 and 0 <= res["top1"] <= res["top5"] <= 1

    from cnnzoo.data.datasets import decode_image
    from cnnzoo.data.transforms import eval_transform

    model = create_model("mobilenet_v2", pretrained=True).eval()
    t = eval_transform(model.pretrained_cfg)
    x = torch.stack([t(decode_image(p, 3)) for p in sorted(root.glob("*/*.jpg"))])
    with torch.no_grad():
        pred = model(x).argmax(1)
    y = torch.tensor([1, 1, 0, 0])  # goldfish (1) sorts before n01440764 (0)
    assert res["top1"] == (pred == y).float().mean().item()

    (root / "no such class").mkdir()
    assert main(["eval", "--model", "mobilenet_v2", "--pretrained", "--dataset", "imagefolder",
                 "--data-dir", str(root)]) == 2
    assert "no such class" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["train", "--model", "resnet50"], ["eval", "--model", "resnet50"], ["predict", "--model", "resnet50", "a.png"],
    ["summary", "resnet50"], ["bench", "resnet50"], ["export", "--model", "resnet50", "--out", "m.onnx"],
    ["compress", "--model", "resnet50", "--out", "m.cnnz"],
])
def test_pretrained_and_weights_flags_on_every_command_that_builds_a_model(argv):
    from cnnzoo.cli import build_parser
    from cnnzoo.cli.common import pretrained_arg
    from cnnzoo.cli.train import train_config

    def chosen(*flags):
        args = build_parser().parse_args([*argv, *flags])
        if argv[0] == "train":
            cfg = train_config(args)
            return cfg.weights or cfg.pretrained
        return pretrained_arg(args)

    assert chosen("--pretrained") is True and chosen("--weights", "tv2_in1k") == "tv2_in1k"
    if argv[0] == "predict":  # a flag, not an optional value: the image stays positional
        assert build_parser().parse_args([*argv, "--pretrained"]).images == ["a.png"]


def test_train_from_published_weights_records_their_source(published, files, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="left freshly initialised"):
        code = main(["train", "--model", "mobilenet_v2", "--pretrained", "--dataset", "synthetic", "--input-size",
                     "3", "32", "32", "--epochs", "1", "--train-subset", "32", "--test-subset", "16",
                     "--batch-size", "16", "--out", str(out), "--no-progress"])
    assert code == 0
    source = json.loads((out / "config.json").read_text())["pretrained_from"]
    assert source["weights"] == "mobilenet_v2.tv_in1k" and source["sha256"] == hashlib.sha256(files["tv_bytes"]).hexdigest()
    assert source["url"] == published["tv"].url
    config = json.loads((out / "config.json").read_text())  # fine-tuning feeds the weights ImageNet's statistics
    assert config["mean"] == pytest.approx([0.485, 0.456, 0.406]) and config["std"] == pytest.approx([0.229, 0.224, 0.225])


def test_export_carries_the_weights_classes_and_preprocessing(published, tmp_path, capsys):
    from cnnzoo.inference.onnx import load_onnx_checkpoint

    out = tmp_path / "m.onnx"
    assert main(["export", "--model", "mobilenet_v2", "--weights", "imagenet1k_v1", "--input-size", "3", "32", "32",
                 "--out", str(out)]) == 0
    _, meta = load_onnx_checkpoint(out)
    assert meta["weights"] == "mobilenet_v2.tv_in1k" and meta["classes"][281] == "tabby"
    assert (meta["crop_pct"], meta["interpolation"]) == (0.875, "bilinear")
