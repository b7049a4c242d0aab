"""The package's shape: one folder per layer, imports running one way, downward, and no cycles.

The graph is read from the source (every ``import``, at the top of a module or inside a function),
so an import hidden in a function to break a cycle counts as the cycle it hides.
"""
import ast
from pathlib import Path

import pytest

import cnnzoo

PACKAGE = Path(cnnzoo.__file__).parent
# Bottom first: a layer may import the layers before it, never one after it.
LAYERS = ["utils", "analysis", "models", "data", "inference", "interpretation", "training", "compression", "studies",
          "explore", "cli"]
# The command line imports each command's library when the command runs, so that `cnnzoo --help`
# and every other command start without loading what they do not use.
LAZY_IMPORTS_ALLOWED = ("cnnzoo.cli",)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, known: set[str]) -> list[tuple[str, bool]]:
    """(each cnnzoo module ``path`` imports, whether the import is inside a function or class)."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            # ``from cnnzoo.models import hub`` imports the module cnnzoo.models.hub.
            targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                       for a in node.names]
        else:
            continue
        found += [(t, node.col_offset > 0) for t in targets if t.split(".")[0] == "cnnzoo"]
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: {t for t, _ in imports(p, set(mods))} - {m} for m, p in mods.items()}


def layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return path[path.index(n):] + [n] if n in path else [m, n]
            if n not in state and (cycle := visit(n, path + [n])):
                return cycle
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (cycle := visit(m, [m])):
            return cycle
    return None


def test_every_folder_is_a_layer():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(LAYERS), f"place each package in LAYERS: {sorted(folders ^ set(LAYERS))}"
    loose = sorted(p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py"))
    assert not loose, f"modules outside any layer: {loose}"


def test_imports_run_downward():
    upward = []
    for m, targets in graph().items():
        if layer(m) is None:  # cnnzoo/__init__.py and __main__.py: the public face, above every layer
            continue
        for t in targets:
            if t == "cnnzoo" or (layer(t) and LAYERS.index(layer(t)) > LAYERS.index(layer(m))):
                upward.append(f"{m} -> {t}")
    assert not upward, "imports from a layer above: " + ", ".join(sorted(upward))


def test_inference_imports_nothing_from_training():
    edges = graph()
    assert not [(m, t) for m, ts in edges.items() if layer(m) == "inference" for t in ts if layer(t) == "training"]


def test_no_import_cycles():
    assert find_cycle(graph()) is None, f"import cycle: {' -> '.join(find_cycle(graph()))}"


def test_imports_sit_at_the_top_of_modules():
    mods = modules()
    inner = [f"{m} imports {t} inside a function" for m, p in mods.items() if not m.startswith(LAZY_IMPORTS_ALLOWED)
             for t, nested in imports(p, set(mods)) if nested]
    assert not inner, "; ".join(inner)


@pytest.mark.parametrize("edges, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"a2"}, "a2": {"b"}, "b": {"a2"}}, ["a2", "b", "a2"]),
])
def test_the_cycle_finder_finds_cycles(edges, cycle):
    assert find_cycle(edges) == cycle


def test_the_graph_sees_imports_inside_functions(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from cnnzoo.training import loop\n")
    assert imports(f, {"cnnzoo.training.loop"}) == [("cnnzoo.training.loop", True)]
