"""hubconf.py: torch.hub's entry points, one per registered model, loaded as torch.hub loads them
(``source="local"``, and from the folder a GitHub download leaves in torch.hub's cache), with
published weights served from 127.0.0.1 as tests/models/test_hub.py serves them."""
import inspect
from pathlib import Path

import pytest
import torch

import cnnzoo
from cnnzoo.models import hub
from cnnzoo.models.factory import create_model
from cnnzoo.models.registry import list_models, model_entrypoint
from tests.models.test_hub import files, published, server  # noqa: F401  (fixtures: weights served locally)

REPO = str(Path(__file__).resolve().parents[2])


def shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_every_registered_model_loads():
    with torch.device("meta"):  # shapes and counts only: no memory, no initialisation time
        for name in list_models():
            model = torch.hub.load(REPO, name, source="local")
            assert model.pretrained_cfg["architecture"] == name
            assert shapes(model) == shapes(create_model(name)), name
    # Keyword arguments reach create_model; a real forward pass.
    model = torch.hub.load(REPO, "resnet18_cifar", source="local", num_classes=7, in_chans=1).eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 7)
    with pytest.raises(ValueError, match="lenet5 takes no argument 'depth'"):
        torch.hub.load(REPO, "lenet5", source="local", depth=3)


@pytest.fixture
def github_download(tmp_path, monkeypatch):
    """The repository where torch.hub keeps a GitHub download of OWNER/cnnzoo's main branch, so that
    the GitHub form of torch.hub's calls finds it without the network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub").mkdir()
    (tmp_path / "hub" / "cnnzoo-dev_cnnzoo_main").symlink_to(REPO)
    return "cnnzoo-dev/cnnzoo:main"


def test_list_and_help(github_download):
    assert torch.hub.list(github_download, trust_repo=True, verbose=False) == list_models()
    for name in list_models():
        doc = torch.hub.help(github_download, name, trust_repo=True)
        cfg = cnnzoo.get_pretrained_cfg(name)
        assert doc.startswith(f"{name}: {cfg.family}, {cfg.paper}.") and str(cfg.num_classes) in doc
        own = inspect.getdoc(model_entrypoint(name))
        assert own is None or own in doc
        if cnnzoo.list_pretrained(name):
            assert f"pretrained=True loads the published weights {hub.find_weights(name).name}" in doc
        else:
            assert "No published weights" in doc
    model = torch.hub.load(github_download, "lenet5", trust_repo=True, verbose=False)
    assert model.pretrained_cfg["architecture"] == "lenet5"


def test_pretrained_loads_published_weights(published, files):  # noqa: F811  (the fixtures imported above)
    model = torch.hub.load(REPO, "mobilenet_v2", source="local", pretrained=True).eval()
    assert model.pretrained_cfg["weights"] == "mobilenet_v2.tv_in1k"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), files["tv_ref"](x), atol=1e-5, rtol=1e-5)


def test_pretrained_without_published_weights_is_a_clear_error():
    without = [n for n in list_models() if not cnnzoo.list_pretrained(n)]
    assert "lenet5" in without and "resnet50" not in without
    for name in without:
        with pytest.raises(ValueError, match=f"no published weights for model '{name}'; models with published"):
            torch.hub.load(REPO, name, source="local", pretrained=True)
