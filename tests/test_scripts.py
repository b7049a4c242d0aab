"""The scripts under benchmarks/ and scripts/ use cnnzoo's modules by name: importing each one
(its code runs only under ``__main__``) catches a moved or renamed module before a benchmark run does."""
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("benchmarks/*.py"), *ROOT.glob("scripts/*.py")])


def test_there_are_scripts_to_check():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_script_imports_and_runs_nothing_on_import(path):
    assert 'if __name__ == "__main__":' in path.read_text(), f"{path.name} would run when imported"
    spec = importlib.util.spec_from_file_location(f"script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
