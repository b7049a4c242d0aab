"""``cnnzoo compare``: accuracy against cost, as in Canziani et al. 2016."""
from __future__ import annotations

import argparse
from typing import Any

from cnnzoo.cli.common import add_json


def cmd_compare(args: argparse.Namespace) -> Any:
    from cnnzoo.studies.compare import compare, format_points

    axis, *bench = args.x
    result = compare(args.sources, out_png=args.out, out_html=args.html, x=axis, bench=bench,
                     bench_variant=args.latency_variant)
    print(format_points(result["points"]))
    for kind, path in result["paths"].items():
        print(f"wrote {kind.upper()}: {path}")
    if not result["paths"]:
        print("no chart written: add --out chart.png and/or --html chart.html")
    return result


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "compare", help="top-1 vs GMACs bubble chart of runs and leagues beside published ImageNet figures",
        description="Top-1 accuracy against GMACs per image (log scale), bubble area proportional to "
                    "parameters, as Canziani et al. 2016 Fig. 2: our runs in one panel, the published "
                    "ImageNet-1k figures of the zoo's networks in the other.")
    s.add_argument("sources", nargs="+", metavar="RUN_OR_LEAGUE_DIR",
                   help="run folders (cnnzoo train) and/or league folders (cnnzoo league --out)")
    s.add_argument("--out", metavar="PNG", help="write the chart as a PNG")
    s.add_argument("--html", metavar="HTML", help="write the chart as one standalone HTML file (works offline)")
    s.add_argument("--x", nargs="+", default=["gmacs"], metavar="gmacs | latency BENCH.json",
                   help="x axis: GMACs per image (default), or measured ms per image from `cnnzoo bench --json` "
                        "reports (PNG only; models the reports do not time are left out)")
    s.add_argument("--latency-variant", default="ours", metavar="VARIANT",
                   help="with --x latency: the bench variant whose time is plotted (default ours; e.g. "
                        "onnxruntime-int8, reference)")
    add_json(s)
    s.set_defaults(func=cmd_compare)
