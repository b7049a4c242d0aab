"""``cnnzoo degradation``: plain against residual networks of two depths (He et al. 2015)."""
from __future__ import annotations

import argparse
from typing import Any

from cnnzoo.cli.common import add_json
from cnnzoo.studies.degradation import DEFAULT_DEPTHS, DEFAULT_EPOCHS, DEFAULT_SUBSET


def cmd_degradation(args: argparse.Namespace) -> Any:
    from cnnzoo.studies.degradation import format_degradation, run_degradation

    result = run_degradation(args.depths, epochs=args.epochs, subset=args.subset or None, dataset=args.dataset,
                             data_dir=args.data_dir, threads=args.threads, seed=args.seed, out=args.out,
                             plot=args.plot, device=args.device, progress=not args.no_progress)
    print(format_degradation(result))
    return result


def add_parsers(sub: argparse._SubParsersAction) -> None:
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
