"""``cnnzoo league``: every family trained with one recipe on one dataset, side by side."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnzoo.cli.common import BoolOrWord, add_json, add_model_kwargs, model_kwargs
from cnnzoo.cli.train import add_log_flags
from cnnzoo.studies.league import DEFAULT_MODELS, PLAN_SHARE, TIERS
from cnnzoo.training.config import RECIPES, TrainConfig


def cmd_league(args: argparse.Namespace) -> Any:
    from cnnzoo.studies.league import format_leaderboard, run_league

    board = run_league(args.models, epochs=args.epochs, budget_minutes=args.budget_minutes, out=args.out,
                       dataset=args.dataset, data_dir=args.data_dir, device=args.device, amp=args.amp,
                       threads=args.threads, seed=args.seed, train_subset=args.train_subset, recipe=args.recipe,
                       model_kwargs=model_kwargs(args), tier=args.tier, progress=not args.no_progress, log=args.log,
                       log_every=args.log_every)
    print(format_leaderboard(board), end="")
    print(f"leaderboard written to {Path(args.out) / 'leaderboard.md'}, leaderboard.json and league.json")
    return board


def add_parsers(sub: argparse._SubParsersAction) -> None:
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
                        f"{', '.join(sorted(RECIPES))} (cnnzoo/training/recipes/NAME.toml), or a recipe file")
    s.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="runs/league", help="league folder: one run folder per model, leaderboard.{md,json}")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_log_flags(s)  # each model's run logged in its folder; MLflow: one experiment for the league
    add_model_kwargs(s, help="arguments of each model's constructor that takes them")
    add_json(s)
    s.set_defaults(func=cmd_league)
