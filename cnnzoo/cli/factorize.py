"""``cnnzoo factorize``: one k x k convolution against stacked 3 x 3 ones and against 1 x k + k x 1."""
from __future__ import annotations

import argparse
from typing import Any

from cnnzoo.cli.common import (
    add_json,
)


def cmd_factorize(args: argparse.Namespace) -> Any:
    from cnnzoo import analysis

    result = analysis.factorize(args.kernel, args.channels, args.channels, args.size)
    print(analysis.format_factorize(result))
    if args.plot:
        analysis.plot_factorize(result, args.plot)
        print(f"chart written to {args.plot}")
    return analysis.factorize_to_json(result)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("factorize", help="one kxk conv vs stacked 3x3 vs 1xk+kx1 (Simonyan & Zisserman 2014, "
                                         "VGG section 2.3; Szegedy et al. 2016, Inception v3 section 3)")
    s.add_argument("--kernel", type=int, required=True)
    s.add_argument("--channels", type=int, required=True)
    s.add_argument("--size", type=int, default=32)
    s.add_argument("--plot", metavar="PNG")
    add_json(s)
    s.set_defaults(func=cmd_factorize)
