"""``cnnzoo experiment``: the design arguments of the networks as experiments (cnnzoo.studies.experiments)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnzoo.cli.common import add_json
from cnnzoo.cli.train import add_log_flags


def cmd_experiment(args: argparse.Namespace) -> Any:
    from cnnzoo.studies.experiments import EXPERIMENTS, format_experiment, format_list, run_experiment

    if args.list:
        print(format_list())
        return {name: e.question for name, e in EXPERIMENTS.items()}
    if not args.name:
        raise ValueError("give an experiment NAME, or --list to see them")
    overrides = {k: getattr(args, k) for k in ("data_dir", "threads", "train_subset", "log", "log_every")
                 if getattr(args, k) is not None}
    result = run_experiment(args.name, seeds=args.seeds, epochs=args.epochs, out=args.out, results=args.results,
                            device=args.device, progress=not args.no_progress, **overrides)
    print(format_experiment(result))
    results = Path(args.results)
    print(f"written: {results / (args.name + '.json')} and {results / (args.name + '.png')}")
    return result


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("experiment", help="a design argument of the networks (3x3 stacks, batch norm, cardinality, "
                                          "SE, MobileNet) as a resumable experiment with seeds",
                       description="Train the variants of one experiment with one recipe and several seeds, judge "
                                   "its claims against the seeds' spread, and write RESULTS/NAME.json and .png. "
                                   "Rerunning skips finished runs and continues interrupted ones.")
    s.add_argument("name", nargs="?", metavar="NAME", help="experiment name (--list shows them)")
    s.add_argument("--list", action="store_true", help="list the experiments and their questions")
    s.add_argument("--seeds", type=int, default=3, help="runs per variant, seeds 0 .. N-1 (default 3)")
    s.add_argument("--epochs", type=int, help="epochs per run (default: the experiment's recipe)")
    s.add_argument("--train-subset", type=int, metavar="K",
                   help="train on K images instead of the recipe's subset (a quick check; not the experiment's result)")
    s.add_argument("--out", default="runs/experiments", help="run folders: OUT/NAME/VARIANT/seedK (default runs/experiments)")
    s.add_argument("--results", default="docs/experiments", help="where NAME.json and NAME.png go (default docs/experiments)")
    s.add_argument("--data-dir")
    s.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    s.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_log_flags(s)  # each run logged in its folder; MLflow: one experiment for the experiment
    add_json(s)
    s.set_defaults(func=cmd_experiment)
