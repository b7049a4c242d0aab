"""Models on the Hugging Face Hub both ways (``cnnzoo push``, ``create_model("hf-hub:...")``), against
the stand-in hub of tests/hfserver.py on 127.0.0.1: Xet off, a dummy token, a temporary HF_HOME.

A small run (LeNet-5 on synthetic images) is pushed, then loaded in a fresh process, online and
offline; a repository pushed by timm's own push_to_hf_hub loads into cnnzoo's twin of its model.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import cnnzoo
from cnnzoo.cli import main
from cnnzoo.training.publish import push_run, run_command
from tests.hfserver import HubServer

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "lenet"
    assert main(["train", "--model", "lenet5", "--dataset", "synthetic", "--epochs", "2", "--train-subset", "256",
                 "--test-subset", "64", "--batch-size", "64", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The stand-in hub, and the environment a fresh process needs to reach it."""
    import huggingface_hub.constants as constants

    server = HubServer()
    env = dict(HF_ENDPOINT=server.url, HF_HOME=str(tmp_path / "hf"), HF_TOKEN="hf_dummy_token",
               HF_HUB_DISABLE_XET="1")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("HF_HUB_CACHE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(key, raising=False)
    # huggingface_hub reads these once, when imported: this process imported it already
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
    server.env = {**os.environ, **env, "PYTHONPATH": str(ROOT)}
    yield server
    server.stop()


def _state(data: bytes, tmp_path: Path) -> dict[str, torch.Tensor]:
    path = tmp_path / "pushed.safetensors"
    path.write_bytes(data)
    return load_file(str(path))


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_push_writes_timms_layout_and_a_model_card(run, hub, tmp_path, capsys):
    from timm.models._hub import _parse_model_cfg
    from timm.models._pretrained import PretrainedCfg

    assert main(["push", "--checkpoint", str(run), "--repo-id", "me/lenet", "--license", "apache-2.0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["name"] == "hf-hub:me/lenet" and res["commit_url"].startswith(f"{hub.url}/me/lenet/commit/")
    commit = hub.commits[-1]
    assert commit["files"] == ["README.md", "config.json", "model.safetensors"]
    assert commit["authorization"] == "Bearer hf_dummy_token" and commit["summary"] == "Add lenet5 trained with cnnzoo"
    assert ("POST", "/api/models/me/lenet/preupload/main") in hub.requests

    assert _same_tensors(_state(hub.repo_file("me/lenet", "model.safetensors"), tmp_path),
                         load_file(str(run / "last.safetensors")))
    config = json.loads(hub.repo_file("me/lenet", "config.json"))
    recorded = json.loads((run / "config.json").read_text())
    assert (config["architecture"], config["num_classes"], config["num_features"]) == ("lenet5", 10, 120)
    assert config["model_args"] == {"num_classes": 10, "in_chans": 1} and config["label_names"] == recorded["classes"]
    pcfg = config["pretrained_cfg"]
    assert pcfg["input_size"] == [1, 32, 32] and pcfg["mean"] == recorded["mean"] and pcfg["std"] == recorded["std"]
    assert (pcfg["crop_pct"], pcfg["interpolation"], pcfg["license"]) == (1.0, "bilinear", "apache-2.0")
    # timm reads it as it reads its own: every field of pretrained_cfg is one of timm's
    parsed, architecture, model_args = _parse_model_cfg(json.loads(json.dumps(config)), {})
    assert architecture == "lenet5" and model_args["in_chans"] == 1
    assert PretrainedCfg(**parsed).num_classes == 10

    card = hub.repo_file("me/lenet", "README.md").decode()
    summary = json.loads((run / "summary.json").read_text())
    assert card.startswith("---\nlibrary_name: cnnzoo\n") and "license: apache-2.0" in card
    assert "LeCun et al. 1998" in card and "synthetic" in card
    assert f"test top-1 {100 * summary['test_top1']:.2f}%" in card
    assert run_command(recorded) in card and f"--out {run}" in card
    assert f"{summary['train_seconds']} s on {summary['device_name']}" in card


def test_best_weights_to_a_private_branch(run, hub, tmp_path, capsys):
    assert main(["push", "--checkpoint", str(run), "--repo-id", "me/lenet-best", "--best", "--private",
                 "--revision", "dev", "--commit-message", "the best epoch"]) == 0
    commit = hub.commits[-1]
    assert (commit["revision"], commit["summary"], hub.private["me/lenet-best"]) == ("dev", "the best epoch", True)
    assert _same_tensors(_state(hub.repo_file("me/lenet-best", "model.safetensors", "dev"), tmp_path),
                         load_file(str(run / "best.safetensors")))
    card = hub.repo_file("me/lenet-best", "README.md", "dev").decode()
    assert "**License:** none stated" in card and "license:" not in card.split("---")[1]
    assert hub.repo_file("me/lenet-best", "README.md") is None  # main is untouched
    model = cnnzoo.create_model("hf-hub:me/lenet-best@dev")
    assert model.pretrained_cfg["weights"] == "hf-hub:me/lenet-best@dev"
    assert _same_tensors(model.state_dict(), load_file(str(run / "best.safetensors")))
    # timm's pretrained=False: the repository's design and preprocessing, without its weights
    bare = cnnzoo.create_model("hf-hub:me/lenet-best@dev", pretrained=False)
    assert not _same_tensors(bare.state_dict(), model.state_dict()) and "hf_hub_id" not in bare.pretrained_cfg
    assert bare.pretrained_cfg["mean"] == model.pretrained_cfg["mean"] != cnnzoo.get_model_cfg("lenet5")["mean"]
    assert [t.shape[1] for t in cnnzoo.create_model("hf-hub:me/lenet-best@dev", features_only=True)(
        torch.zeros(1, 1, 32, 32))] == [6, 16]


def _fresh_process(hub, script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], env={**hub.env, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


LOAD_AND_EVAL = """
import sys
from safetensors.torch import save_file
import cnnzoo
from cnnzoo.cli import main

model = cnnzoo.create_model("hf-hub:me/lenet")
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[1])
sys.exit(main(["eval", "--checkpoint", "hf-hub:me/lenet", "--json"]))
"""


def test_pushed_run_loads_in_a_fresh_process_online_then_offline(run, hub, tmp_path, capsys):
    push_run(run, "me/lenet")
    assert main(["eval", "--checkpoint", str(run), "--json"]) == 0
    local = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    online = _fresh_process(hub, LOAD_AND_EVAL, str(tmp_path / "online.safetensors"))
    assert online.returncode == 0, online.stderr
    assert _same_tensors(load_file(str(tmp_path / "online.safetensors")), load_file(str(run / "last.safetensors")))
    result = json.loads(online.stdout.strip().splitlines()[-1])
    assert (result["images"], result["top1"], result["loss"]) == (local["images"], local["top1"], local["loss"])

    hub.stop()  # the cache alone, as huggingface_hub's offline mode reads it
    offline = _fresh_process(hub, LOAD_AND_EVAL, str(tmp_path / "offline.safetensors"), HF_HUB_OFFLINE="1")
    assert offline.returncode == 0, offline.stderr
    assert json.loads(offline.stdout.strip().splitlines()[-1])["top1"] == local["top1"]
    assert _same_tensors(load_file(str(tmp_path / "offline.safetensors")), load_file(str(run / "last.safetensors")))


def test_fine_tuning_from_a_hub_repository(run, hub, tmp_path):
    push_run(run, "me/lenet")
    out = tmp_path / "tuned"
    with pytest.warns(UserWarning, match="left freshly initialised"):
        assert main(["train", "--weights", "hf-hub:me/lenet", "--dataset", "synthetic",
                     "--synthetic-classes", "4", "--epochs", "1", "--train-subset", "32", "--test-subset", "16",
                     "--batch-size", "16", "--out", str(out), "--no-progress"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "lenet5"  # the repository's network, without --model
    source = config["pretrained_from"]
    assert (source["weights"], source["hf_hub_id"], source["source"]) == ("hf-hub:me/lenet", "me/lenet", "hf-hub")
    pushed = json.loads((run / "config.json").read_text())
    assert config["mean"] == pushed["mean"] and config["std"] == pushed["std"]  # the repository's statistics

    from cnnzoo.cli import build_parser
    from cnnzoo.cli.train import train_config

    hub.create_repo(dict(organization="me", name="resnet"))
    hub.set_repo_file("me/resnet", "config.json", json.dumps(dict(architecture="resnet20")).encode())
    assert train_config(build_parser().parse_args(["train", "--weights", "hf-hub:me/resnet"])).model == "resnet20"


def test_a_repository_pushed_by_timm_loads_into_the_twin(hub):
    import timm
    from timm.models._hub import push_to_hf_hub

    torch.manual_seed(0)
    ref = timm.create_model("resnet18", num_classes=10).eval()
    with torch.no_grad():  # batch-norm statistics that are not the identity
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    push_to_hf_hub(ref, "timm-user/resnet18-pets", safe_serialization=True)
    model = cnnzoo.create_model("hf-hub:timm-user/resnet18-pets").eval()
    cfg = model.pretrained_cfg
    assert (cfg["architecture"], cfg["num_classes"], cfg["interpolation"], cfg["crop_pct"]) == (
        "resnet18", 10, "bicubic", 0.95)
    assert cfg["hf_hub_id"] == "timm-user/resnet18-pets"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), rtol=1e-5, atol=1e-5)


def test_missing_foreign_and_damaged_repositories_are_clear_errors(run, hub, capsys):
    with pytest.raises(FileNotFoundError, match=f"hf-hub:me/nothing: no repository me/nothing on {hub.url}"):
        cnnzoo.create_model("hf-hub:me/nothing")
    assert main(["eval", "--checkpoint", "hf-hub:me/nothing"]) == 2
    assert "no repository me/nothing" in capsys.readouterr().err
    with pytest.raises(ValueError, match="expected hf-hub:OWNER/NAME"):
        cnnzoo.create_model("hf-hub:")

    push_run(run, "me/lenet")
    with pytest.raises(FileNotFoundError, match="has no revision 'v9'"):
        cnnzoo.create_model("hf-hub:me/lenet@v9")
    with pytest.raises(ValueError, match="hf-hub:me/lenet holds a lenet5, not a resnet20"):
        cnnzoo.create_model("resnet20", pretrained="hf-hub:me/lenet")
    assert main(["eval", "--checkpoint", "hf-hub:me/lenet", "--model", "resnet20"]) == 2
    assert "holds a lenet5" in capsys.readouterr().err

    hub.create_repo(dict(organization="me", name="vit"))
    hub.set_repo_file("me/vit", "config.json", json.dumps(dict(architecture="vit_base_patch16_224")).encode())
    with pytest.raises(ValueError, match="hf-hub:me/vit holds a 'vit_base_patch16_224'.*no twin"):
        cnnzoo.create_model("hf-hub:me/vit")

    push_run(run, "me/damaged")
    hub.set_repo_file("me/damaged", "model.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ValueError, match="hf-hub:me/damaged: model.safetensors is damaged"):
        cnnzoo.create_model("hf-hub:me/damaged")

    push_run(run, "me/tampered")
    hub.etags["/me/tampered/resolve/main/model.safetensors"] = "0" * 64
    with pytest.raises(ValueError, match="hf-hub:me/tampered model.safetensors: .*the hub publishes 0{64}; refused"):
        cnnzoo.create_model("hf-hub:me/tampered")


def test_timm_names_find_their_cnnzoo_twins():
    from cnnzoo.models.hf_hub import split_hub_name, twin_architecture

    twins = {t: twin_architecture(t, "hf-hub:x/y") for t in ("resnet18", "mobilenetv1_100", "mobilenetv2_100",
                                                              "seresnext50_32x4d", "inception_v3")}
    assert twins == {"resnet18": "resnet18", "mobilenetv1_100": "mobilenet_v1", "mobilenetv2_100": "mobilenet_v2",
                     "seresnext50_32x4d": "seresnext50_32x4d", "inception_v3": "inception_v3"}
    with pytest.raises(ValueError, match="'convnext_tiny'.*no twin"):
        twin_architecture("convnext_tiny", "hf-hub:x/y")
    assert split_hub_name("hf-hub:me/lenet@v1.2") == ("me/lenet", "v1.2")
    for bad in ("hf-hub:a/b/c", "hf-hub:me/x@a@b", "hf-hub:/x"):
        with pytest.raises(ValueError, match="expected hf-hub:OWNER/NAME"):
            split_hub_name(bad)
