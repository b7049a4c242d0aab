"""``cnnzoo summary``: a network's layer table: shapes, parameters, multiply-adds, receptive fields."""
from __future__ import annotations

import argparse
from typing import Any

from cnnzoo.cli.common import (
    add_input_size,
    add_json,
    add_model_kwargs,
    add_model_source,
    input_size,
    model_kwargs,
    pretrained_arg,
)


def cmd_summary(args: argparse.Namespace) -> Any:
    from cnnzoo import analysis
    from cnnzoo.models.factory import create_model
    from cnnzoo.models.registry import get_model_cfg

    size = input_size(args) or get_model_cfg(args.model)["input_size"]
    model = create_model(args.model, num_classes=args.num_classes, in_chans=size[0], pretrained=pretrained_arg(args),
                         **model_kwargs(args))
    result = analysis.summary(model, size, depth=args.depth)
    print(analysis.format_summary(result))
    return analysis.summary_to_json(result)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("summary", help="per-layer shapes, parameters, MACs and receptive fields")
    s.add_argument("model")
    add_input_size(s)
    s.add_argument("--num-classes", type=int, default=1000)
    s.add_argument("--depth", type=int, default=3, help="module nesting depth to show")
    add_model_source(s, checkpoint=False, model=False)
    add_model_kwargs(s)
    add_json(s)
    s.set_defaults(func=cmd_summary)
