"""What `cnnzoo models` says a network is verified against is backed by a test of that name."""
import ast
from pathlib import Path

import pytest

import cnnzoo
from cnnzoo.models.registry import get_pretrained_cfg

HERE = Path(__file__).parent


def test_functions(path: Path) -> set[str]:
    return {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef)}


test_functions.__test__ = False  # a helper, not a test


@pytest.mark.parametrize("name", cnnzoo.list_models())
def test_a_verified_by_label_names_an_existing_test(name):
    cfg = get_pretrained_cfg(name)
    assert not (cfg.reference and cfg.verified_by), f"{name}: a reference or a verified_by, not both"
    if cfg.verified_by is None:
        return
    what, _, test = cfg.verified_by.rpartition(": ")
    file, _, function = test.partition("::")
    assert what and (HERE / file).is_file(), f"{name}: {cfg.verified_by!r} names no test file under tests/models/"
    assert function in test_functions(HERE / file), f"{name}: {file} has no test {function!r}"


def test_networks_designed_here_claim_no_verification():
    for name in ("vgg_airbench", "vgg_airbench_96", "vgg_mini", "resnext11_cifar", "alexnet_cifar", "seresnet20"):
        assert get_pretrained_cfg(name).verified_against == "-", name
    assert get_pretrained_cfg("resnet50").verified_against == "torchvision:resnet50"
    assert get_pretrained_cfg("resnet20").verified_against.endswith("test_resnet.py::test_cifar_resnet_table")
