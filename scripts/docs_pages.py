"""The documentation site's generated parts (an MkDocs hook, named in mkdocs.yml).

Every table and figure of the tour of the networks, of the results pages and of the architecture
page is computed here when the site is built, from the code (models built on the meta device,
``cnnzoo.analysis``) and from the committed result files (``docs/league*.json``,
``docs/experiments/*.json``), so that no page can drift from what the code does. A page asks for a
part with a marker on a line of its own::

    <!-- cnnzoo:layers alexnet 3,224,224 -->   the network's layer table: shapes, params, MACs, RF
    <!-- cnnzoo:family AlexNet -->             every registered model of the family
    <!-- cnnzoo:league AlexNet -->             the family's league entries (CPU and GPU tiers)
    <!-- cnnzoo:league-table cpu -->           one tier's whole table
    <!-- cnnzoo:experiment stack3x3 -->        an experiment's variants and its judged claims
    <!-- cnnzoo:layers-diagram -->             the package's layers and what each imports

An unknown marker or argument fails the build. The API reference pages (``reference/LAYER.md``)
are generated too, one per layer, from the modules on disk.

``python scripts/docs_pages.py PAGE`` prints a page as the site renders its markers
(e.g. ``tour/alexnet.md``).
"""
from __future__ import annotations

import functools
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
if str(ROOT) not in sys.path:  # MkDocs loads this file by path; the package and tests/ live beside it
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from mkdocs.structure.files import File  # noqa: E402

import cnnzoo  # noqa: E402
from cnnzoo.analysis import summary  # noqa: E402
from cnnzoo.inference.evaluate import tta_views  # noqa: E402
from cnnzoo.models.factory import model_table  # noqa: E402
from tests.test_layout import LAYERS, PACKAGE, graph, layer  # noqa: E402

MARKER = re.compile(r"^<!-- cnnzoo:([\w-]+)\s*(.*?)\s*-->$", re.MULTILINE)
# Rows of a layer table that change no shape and hold no weights would only repeat the row above.
QUIET_TYPES = ("ReLU", "ReLU6", "GELU", "Dropout", "Identity", "Flatten", "Sigmoid", "Hardswish", "SiLU")
NORM_TYPES = ("BatchNorm2d", "LocalResponseNorm")
# The API reference documents the library's layers; the command line is documented by the guides.
REFERENCE_LAYERS = [name for name in LAYERS if name != "cli"]


def table(header: list[str], rows: list[list[str]], align: str = "") -> str:
    """A Markdown table; ``align`` has one letter per column, r for right-aligned numbers."""
    align = align or "l" * len(header)
    rule = ["---:" if a == "r" else "---" for a in align]
    return "\n".join("| " + " | ".join(r) + " |" for r in [header, rule, *rows])


def shape(s: Any) -> str:
    return "x".join(map(str, s)) if s and isinstance(s[0], int) else ", ".join(shape(x) for x in s)


def pair(p: Any) -> str:
    if p is None:
        return ""
    return str(p[0]) if isinstance(p, tuple) and p[0] == p[1] else "x".join(map(str, p)) if isinstance(p, tuple) else str(p)


# --------------------------------------------------------------------------------------------------
# The networks


def count(n: float) -> str:
    """A count in the unit that keeps three significant digits: 70.3M, 117.6k, 850."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f}{unit}"
    return f"{n:,.0f}"


def layers_part(arg: str) -> str:
    """``NAME [C,H,W] [depth=N | leaves]``: the rows down to depth N (default 1), or every leaf
    module with weights or a stride (convolutions, pools, linear layers)."""
    name, *options = arg.split()
    input_size = next((tuple(int(v) for v in o.split(",")) for o in options if "," in o), None)
    leaves = "leaves" in options
    depth = next((int(o.removeprefix("depth=")) for o in options if o.startswith("depth=")), 1)
    unknown = [o for o in options if "," not in o and o != "leaves" and not o.startswith("depth=")]
    if unknown:
        raise ValueError(f"layers {arg!r}: unknown option(s) {unknown} (C,H,W, depth=N or leaves)")
    with torch.device("meta"):  # shapes and counts only: nothing is computed
        model = cnnzoo.create_model(name)
    result = summary(model, input_size, depth=None if leaves else depth)
    shown = [r for r in result.layers if r.type not in QUIET_TYPES
             and (not leaves or (r.is_leaf and r.type not in NORM_TYPES))]
    rows = [[f"`{r.name}`", r.type, pair(r.kernel), pair(r.stride), "" if r.groups in (None, 1) else str(r.groups),
             shape(r.output_shape), f"{r.params:,}", count(r.macs), pair(r.rf), pair(r.jump)] for r in shown]
    size_flag = f" --input-size {' '.join(map(str, input_size))}" if input_size else ""
    head = (f"`{name}` at {shape(result.input_size)}: **{result.total_params:,} parameters, "
            f"{count(result.total_macs)} multiply-adds** per image (`cnnzoo summary {name}{size_flag}"
            f"{' --depth 9' if leaves else f' --depth {depth}'}`). Groups: the convolution's groups where not 1 (depthwise: "
            "one per channel); RF: the receptive field in input pixels; jump: input pixels between neighbouring "
            "outputs.")
    return head + "\n\n" + table(["layer", "type", "kernel", "stride", "groups", "output", "params", "MACs", "RF",
                                   "jump"], rows, "llrrrlrrrr")


@functools.lru_cache(maxsize=1)
def zoo() -> list[dict[str, Any]]:
    return model_table()


def family_part(family: str) -> str:
    rows = [r for r in zoo() if r["family"] == family]
    if not rows:
        raise ValueError(f"no registered model of family {family!r}")
    return table(["model", "year", "input", "params", "MACs", "verified against"],
                 [[f"`{r['name']}`", str(r["year"]), "x".join(map(str, r["input_size"])), f"{r['params']:,}",
                   count(r["gmacs"] * 1e9), r["verified_against"]] for r in rows], "lrlrrl")


# --------------------------------------------------------------------------------------------------
# Results


TIERS = {"cpu": "league.json", "gpu": "league-gpu.json"}


def league(tier: str) -> list[dict[str, Any]]:
    if tier not in TIERS:
        raise ValueError(f"league tier must be one of {sorted(TIERS)}, got {tier!r}")
    return json.loads((DOCS / TIERS[tier]).read_text())


def test_views(command: str) -> str:
    """The test-time views an entry's command scores: the image, its mirror, and shifted copies."""
    words = command.split()
    shift = int(words[words.index("--tta-shift") + 1]) if "--tta-shift" in words else 0
    return str(len(tta_views(torch.zeros(1, 1, 4, 4), flip="--tta-flip" in words, shift=shift)))


def league_rows(entries: list[dict[str, Any]]) -> list[list[str]]:
    return [[f"`{e['model']}`", e["family"], f"**{e['test_top1']:.4f}**", test_views(e["command"]), f"{e['params']:,}",
             f"{e['macs'] / 1e6:,.1f}", f"{e['train_seconds']:,.1f}", f"{e['device']}, {e['date']}"] for e in entries]


LEAGUE_HEADER = ["model", "family", "test top-1", "test views", "params", "MMACs", "train s", "machine, date"]


def league_table_part(tier: str) -> str:
    entries = sorted(league(tier), key=lambda e: -e["test_top1"])
    commands = "\n".join(f"    {e['command']}" for e in entries)
    return (table(LEAGUE_HEADER, league_rows(entries), "llrrrrrl")
            + f"\n\nThe command of each entry (`docs/{TIERS[tier]}`):\n\n{commands}")


def league_part(family: str) -> str:
    parts = []
    for tier in TIERS:
        entries = [e for e in league(tier) if e["family"] == family]
        if entries:
            parts.append(f"{tier.upper()} tier (`docs/{TIERS[tier]}`):\n\n" + table(LEAGUE_HEADER, league_rows(entries),
                                                                                   "llrrrrrl")
                         + "\n\n" + "\n".join(f"    {e['command']}" for e in entries))
    if not parts:
        raise ValueError(f"no league entry of family {family!r}")
    return "\n\n".join(parts)


def experiment(name: str) -> dict[str, Any]:
    path = DOCS / "experiments" / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"no experiment result {path}")
    return json.loads(path.read_text())


def experiment_part(name: str) -> str:
    result = experiment(name)
    rows = [[v["name"], f"{v['params']:,}", f"{v['macs'] / 1e6:,.1f}", f"{100 * v['top1_mean']:.2f}%",
             f"{100 * v['top1_std']:.2f}", str(len(v["runs"])), f"{sum(r['train_seconds'] for r in v['runs']):,.0f}"]
            for v in result["variants"]]
    claims = "\n".join(f"- {c['text']}." for c in result["finding"]["claims"])
    held = sum(c["verdict"] == "holds" for c in result["finding"]["claims"])
    command = result["variants"][0]["runs"][0]["command"]
    return (f"*{result['question']}*\n\n"
            + table(["variant", "params", "MMACs", "test top-1 (mean)", "sd (points)", "seeds", "train s"], rows,
                    "lrrrrrr")
            + f"\n\n**{held} of {len(result['finding']['claims'])} claims hold** (a difference must exceed twice "
              f"its standard error):\n\n{claims}\n\n"
            + f"![{name}: test top-1 per variant](../experiments/{name}.png)\n\n"
            + f"Each run's command is in `docs/experiments/{name}.json`; the first:\n\n    {command}")


# --------------------------------------------------------------------------------------------------
# The package's layers


def layer_modules(name: str) -> list[str]:
    folder = PACKAGE / name
    return sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")


def layer_edges() -> set[tuple[str, str]]:
    """(layer, layer it imports directly) for every import between two layers, less the edges
    implied by others (a -> c where a -> b -> c), so the diagram shows what each layer builds on."""
    edges = {(layer(m), layer(t)) for m, ts in graph().items() for t in ts
             if layer(m) and layer(t) and layer(m) != layer(t)}
    reach = {a: {b for x, b in edges if x == a} for a in LAYERS}
    for k in LAYERS:  # transitive closure, Floyd-Warshall order
        for a in LAYERS:
            if k in reach[a]:
                reach[a] |= reach[k]
    return {(a, b) for a, b in edges if not any(b in reach[c] for x, c in edges if x == a and c != b)}


def layers_diagram_part(_: str) -> str:
    lines = ["```mermaid", "flowchart BT"]
    for name in LAYERS:
        modules = layer_modules(name)
        shown = ", ".join(modules[:6]) + (", ..." if len(modules) > 6 else "")
        lines.append(f'    {name}["<b>{name}</b><br/><small>{shown}</small>"]')
    lines += [f"    {a} --> {b}" for a, b in sorted(layer_edges(), key=lambda e: (LAYERS.index(e[0]), e[1]))]
    lines.append("```")
    order = " < ".join(LAYERS)
    return ("\n".join(lines) + f"\n\nBottom to top, as `tests/test_layout.py`'s `LAYERS` orders them: {order}. "
            "An arrow points from a layer to one it imports directly (edges implied by two others left out); "
            "no arrow points up the list, which the test enforces.")


PARTS = {"layers": layers_part, "family": family_part, "league": league_part, "league-table": league_table_part,
         "experiment": experiment_part, "layers-diagram": layers_diagram_part}


def expand(markdown: str, where: str = "") -> str:
    def one(match: re.Match) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind not in PARTS:
            raise ValueError(f"{where}: unknown marker cnnzoo:{kind} (known: {', '.join(PARTS)})")
        return PARTS[kind](arg)

    return MARKER.sub(one, markdown)


def reference_page(name: str) -> str:
    modules = "\n\n".join(f"::: cnnzoo.{name}.{m}" for m in layer_modules(name))
    return f"# `cnnzoo.{name}`\n\n::: cnnzoo.{name}\n    options:\n      members: false\n\n{modules}\n"


# --------------------------------------------------------------------------------------------------
# MkDocs events


def on_files(files: Any, config: Any) -> Any:
    for name in REFERENCE_LAYERS:
        files.append(File.generated(config, f"reference/{name}.md", content=reference_page(name)))
    # The results document lives at the repository's root, where a reader of the clone finds it.
    files.append(File.generated(config, "results/benchmarks.md", content=(ROOT / "BENCHMARKS.md").read_text()))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown, page.file.src_uri)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/docs_pages.py PAGE (a path under docs/, e.g. tour/alexnet.md)")
    print(expand((DOCS / sys.argv[1]).read_text(), sys.argv[1]))
