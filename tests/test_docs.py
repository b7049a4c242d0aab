"""The documentation quotes the committed results as they are: every league figure and every
experiment figure that README.md, BENCHMARKS.md and the site's hand-written pages state is compared
with docs/league*.json and docs/experiments/*.json; the site's generated parts expand; the
architecture page names every module. (`make test` also builds the site with `mkdocs build --strict`.)"""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", *DOCS.rglob("*.md")])
TIERS = {tier: {e["model"]: e for e in json.loads((DOCS / f).read_text())}
         for tier, f in (("cpu", "league.json"), ("gpu", "league-gpu.json"))}
EXPERIMENTS = {p.stem: json.loads(p.read_text()) for p in sorted((DOCS / "experiments").glob("*.json"))}
NUMBER = r"(\d[\d,]*(?:\.\d+)?)"


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """Each Markdown table of ``text``: its header cells and its rows' cells."""
    found, lines = [], text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and re.match(r"^\|[\s:|-]+\|$", lines[i + 1]):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")])
            found.append(([c.strip() for c in line.strip("|").split("|")], rows))
    return found


def plain(cell: str) -> str:
    return re.sub(r"[`*]", "", cell).strip()


def rounded(value: float, text: str) -> bool:
    """``text`` is ``value`` rounded to the decimals ``text`` shows."""
    decimals = len(text.partition(".")[2])
    return f"{value:.{decimals}f}" == text


def league_rows(path: Path) -> list[tuple[str, str, list[str], list[str]]]:
    rows = []
    for header, body in tables(path.read_text()):
        names = [plain(r[0]).split()[0] for r in body if r and plain(r[0])]
        tier = next((t for t, entries in TIERS.items() if names and all(n in entries for n in names)), None)
        if tier and any("top-1" in h for h in header):
            rows += [(tier, plain(r[0]).split()[0], header, r) for r in body]
    return rows


def test_the_pages_quote_the_league_somewhere():
    quoted = {rel(p) for p in PAGES if league_rows(p)}
    assert {"README.md", "BENCHMARKS.md"} <= quoted, quoted


@pytest.mark.parametrize("path", PAGES, ids=rel)
def test_league_tables_quote_league_json(path):
    for tier, model, header, row in league_rows(path):
        entry = TIERS[tier][model]
        for h, cell in zip(header, row):
            value = plain(cell).replace(",", "")
            if h == "test top-1":
                assert rounded(entry["test_top1"], value), f"{rel(path)}: {model} {cell} != {entry['test_top1']}"
            elif h == "params":
                assert int(value) == entry["params"], f"{rel(path)}: {model} params {cell}"
            elif h == "MMACs":
                assert rounded(entry["macs"] / 1e6, value), f"{rel(path)}: {model} MMACs {cell}"


def experiment_figures(name: str) -> dict[str, list[float]]:
    result = EXPERIMENTS[name]
    claims = result["finding"]["claims"]
    return {"%": [100 * v["top1_mean"] for v in result["variants"]],
            "points": [abs(100 * c["difference"]) for c in claims],
            "standard errors": [abs(c["difference"] / c["standard_error"]) for c in claims]}


def quoted_experiment_figures(text: str) -> list[tuple[str, str]]:
    """(kind, figure) of each percentage with two decimals, "N points" and "N standard errors"."""
    found = [("%", m) for m in re.findall(r"(\d+\.\d\d)%", text)]
    found += [("points", m) for m in re.findall(r"\+?(\d+\.\d+) points", text)]
    for first, second in re.findall(r"(\d+(?:\.\d+)?)(?: and (\d+(?:\.\d+)?))? (?:times their )?standard errors?",
                                    text):
        found += [("standard errors", f) for f in (first, second) if f]
    return found


def experiment_passages(path: Path) -> list[tuple[str, str]]:
    """(experiment, text) of each table row and paragraph that names one experiment and no other."""
    text = path.read_text()
    passages = [" | ".join(r) for _, body in tables(text) for r in body]
    passages += [p for p in re.split(r"\n\s*\n", text) if not p.lstrip().startswith("|")]
    # a results page's section is about the experiment its heading names
    for section in re.split(r"\n## ", text)[1:]:
        head, _, body = section.partition("\n")
        named = [n for n in EXPERIMENTS if re.search(rf"\b{re.escape(n)}\b", head)]
        if len(named) == 1:
            passages += [f"{named[0]}: {p}" for p in re.split(r"\n\s*\n", body) if not p.lstrip().startswith(("|", "<!--"))]
    found = []
    for p in passages:
        named = [n for n in EXPERIMENTS if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", p)]
        if len(named) == 1:
            found.append((named[0], p))
    return found


def test_the_pages_quote_every_experiment_somewhere():
    quoted = {n for p in PAGES for n, text in experiment_passages(p) if quoted_experiment_figures(text)}
    assert quoted == set(EXPERIMENTS)


@pytest.mark.parametrize("path", PAGES, ids=rel)
def test_experiment_figures_quote_their_json(path):
    for name, text in experiment_passages(path):
        figures = experiment_figures(name)
        for kind, figure in quoted_experiment_figures(text):
            assert any(rounded(v, figure) for v in figures[kind]), (
                f"{rel(path)}: {name}'s {figure} {kind} is none of {[round(v, 2) for v in figures[kind]]}")


def test_recorded_commands_use_run_folders_relative_to_the_repository():
    commands = [e["command"] for entries in TIERS.values() for e in entries.values()]
    commands += [r["command"] for result in EXPERIMENTS.values() for v in result["variants"] for r in v["runs"]]
    for command in commands:
        out = command.split("--out ")[1].split()[0]
        assert out.startswith("runs/"), command


def test_the_architecture_page_names_every_module():
    text = (DOCS / "ARCHITECTURE.md").read_text()
    package = ROOT / "cnnzoo"
    missing = [str(p.relative_to(package)) for p in sorted(package.glob("*/*.py"))
               if p.parent.name != "cli" and p.name != "__init__.py" and p.name not in text]
    assert not missing, f"docs/ARCHITECTURE.md does not name {missing}"


def test_every_marker_of_the_site_expands():
    docs_pages = pytest.importorskip("scripts.docs_pages", reason="the docs extra: pip install -e '.[docs]'")
    for path in sorted(DOCS.rglob("*.md")):
        expanded = docs_pages.expand(path.read_text(), rel(path))
        assert "<!-- cnnzoo:" not in expanded, rel(path)
    with pytest.raises(ValueError, match="unknown marker"):
        docs_pages.expand("<!-- cnnzoo:nonsense x -->")
    with pytest.raises(ValueError, match="no league entry"):
        docs_pages.expand("<!-- cnnzoo:league Transformer -->")


def test_the_layers_diagram_draws_the_layout_tests_layers():
    docs_pages = pytest.importorskip("scripts.docs_pages", reason="the docs extra: pip install -e '.[docs]'")
    from tests.test_layout import LAYERS

    diagram = docs_pages.layers_diagram_part("")
    assert re.findall(r"^    (\w+)\[", diagram, re.MULTILINE) == LAYERS
    for a, b in re.findall(r"^    (\w+) --> (\w+)$", diagram, re.MULTILINE):
        assert LAYERS.index(a) > LAYERS.index(b), f"{a} --> {b} points up the layers"


def test_every_file_the_pages_name_exists():
    named = {m for p in PAGES for m in re.findall(r"(?:cnnzoo|benchmarks|scripts|docs|tests)/[\w./-]+\.(?:py|sh|toml|json|md|png|csv)",
                                                  p.read_text())}
    missing = sorted(n for n in named if "NAME" not in n and not (ROOT / n).exists())
    assert not missing, f"the documentation names files that do not exist: {missing}"
