"""``cnnzoo league``, ``cnnzoo compare`` and ``cnnzoo degradation``: many runs, one result."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnzoo.cli.common import BoolOrWord, add_json, add_model_kwargs, model_kwargs
from cnnzoo.degradation import DEFAULT_DEPTHS, DEFAULT_EPOCHS, DEFAULT_SUBSET
from cnnzoo.league import DEFAULT_MODELS, PLAN_SHARE, TIERS
from cnnzoo.train import RECIPES, TrainConfig


def cmd_league(args: argparse.Namespace) -> Any:
    from cnnzoo.league import format_leaderboard, run_league

    board = run_league(args.models, epochs=args.epochs, budget_minutes=args.budget_minutes, out=args.out,
                       dataset=args.dataset, data_dir=args.data_dir, device=args.device, amp=args.amp,
                       threads=args.threads, seed=args.seed, train_subset=args.train_subset, recipe=args.recipe,
                       model_kwargs=model_kwargs(args), tier=args.tier, progress=not args.no_progress)
    print(format_leaderboard(board), end="")
    print(f"leaderboard written to {Path(args.out) / 'leaderboard.md'}, leaderboard.json and league.json")
    return board


def cmd_compare(args: argparse.Namespace) -> Any:
    from cnnzoo.compare import compare, format_points

    axis, *bench = args.x
    result = compare(args.sources, out_png=args.out, out_html=args.html, x=axis, bench=bench,
                     bench_variant=args.latency_variant)
    print(format_points(result["points"]))
    for kind, path in result["paths"].items():
        print(f"wrote {kind.upper()}: {path}")
    if not result["paths"]:
        print("no chart written: add --out chart.png and/or --html chart.html")
    return result


def cmd_degradation(args: argparse.Namespace) -> Any:
    from cnnzoo.degradation import format_degradation, run_degradation

    result = run_degradation(args.depths, epochs=args.epochs, subset=args.subset or None, dataset=args.dataset,
                             data_dir=args.data_dir, threads=args.threads, seed=args.seed, out=args.out,
                             plot=args.plot, device=args.device, progress=not args.no_progress)
    print(format_degradation(result))
    return result


def add_league_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("league", help="train every family with the default recipe; leaderboard vs published")
    s.add_argument("--models", nargs="+", metavar="PATTERN",
                   help=f"model names or wildcards (default: {' '.join(DEFAULT_MODELS)})")
    s.add_argument("--tier", choices=sorted(TIERS),
                   help="a fixed league: cpu = one member per family, the fast recipe, 15 minutes each on 2 threads; "
                        "gpu = the _cifar variants with published figures, 1.6 minutes each on CUDA, the MobileNets "
                        "their own epochs (--models, "
                        "--recipe, --epochs/--budget-minutes, --threads and --device still win)")
    s.add_argument("--dataset", default="fashion-mnist")
    s.add_argument("--data-dir")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--epochs", type=int, help=f"epochs per model (default {TrainConfig.epochs})")
    how.add_argument("--budget-minutes", type=float, metavar="M",
                     help=f"per model: the epochs (or training subset) that fit {100 * PLAN_SHARE:.0f}%% of M minutes at its "
                          "measured speed")
    s.add_argument("--train-subset", type=int, metavar="K", help="train every model on a seeded subset of K images")
    s.add_argument("--device", help="cpu (default; cuda for --tier gpu), cuda or cuda:N")
    s.add_argument("--amp", action=BoolOrWord, choices=("auto",), metavar="auto", default=None,
                   help="bfloat16 autocast: --amp, --no-amp, or --amp auto (bf16 where the CPU or GPU has it "
                        "natively; default: the tier's or recipe's setting)")
    s.add_argument("--recipe", metavar="NAME|FILE",
                   help=f"train every model with this recipe (its model setting aside) instead of the defaults: "
                        f"{', '.join(sorted(RECIPES))} (cnnzoo/recipes/NAME.toml), or a recipe file")
    s.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="runs/league", help="league folder: one run folder per model, leaderboard.{md,json}")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_model_kwargs(s, help="arguments of each model's constructor that takes them")
    add_json(s)
    s.set_defaults(func=cmd_league)


def add_compare_parser(sub: argparse._SubParsersAction) -> None:
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


def add_degradation_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("degradation", help="plain vs residual nets of two depths (He et al. 2015, Fig. 1 and 6)")
    s.add_argument("--depths", type=int, nargs="+", default=list(DEFAULT_DEPTHS),
                   help="depths D of plainD/resnetD (default 20 56)")
    s.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"default {DEFAULT_EPOCHS}")
    s.add_argument("--subset", type=int, default=DEFAULT_SUBSET, metavar="K",
                   help=f"train on a seeded subset of K training images (default {DEFAULT_SUBSET}; 0: all)")
    s.add_argument("--dataset", default="fashion-mnist")
    s.add_argument("--data-dir")
    s.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="runs/degradation", help="one run folder per model, degradation.json")
    s.add_argument("--plot", metavar="PNG", help="figure path (default OUT/degradation.png)")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_json(s)
    s.set_defaults(func=cmd_degradation)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    add_league_parser(sub)
    add_compare_parser(sub)
    add_degradation_parser(sub)
