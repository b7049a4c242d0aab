"""``cnnzoo export``: a checkpoint or a registered model to ONNX, checked with ONNX Runtime."""
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
from cnnzoo.inference.onnx import DEFAULT_OPSET


def cmd_export(args: argparse.Namespace) -> Any:
    from cnnzoo.inference.export import export_model

    report = export_model(args.out, checkpoint=args.checkpoint, model=args.model, model_kwargs=model_kwargs(args),
                          input_size=input_size(args), opset=args.opset, dynamic_batch=args.dynamic_batch,
                          seed=args.seed, pretrained=pretrained_arg(args))
    print(f"exported {report['model']} to {report['path']} ({report['bytes'] / 1e6:.2f} MB, opset {report['opset']}"
          f"{', dynamic batch' if report['dynamic_batch'] else ''}); ONNX Runtime check: top-1 identical, "
          f"max |difference| {report['max_abs_diff']:.2e} <= {report['limit']:.2e}")
    return report


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("export", help="export a checkpoint or a registered model to ONNX (checked with ONNX Runtime)")
    add_model_source(s)
    s.add_argument("--format", default="onnx", choices=["onnx"])
    s.add_argument("--out", required=True, help="output file, e.g. model.onnx")
    s.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    s.add_argument("--dynamic-batch", action="store_true", help="batch dimension left free in the graph")
    add_input_size(s)
    s.add_argument("--seed", type=int, default=0, help="seed of the random weights with --model")
    add_model_kwargs(s, help="arguments of the model's constructor (with --checkpoint: on top of those it records)")
    add_json(s)
    s.set_defaults(func=cmd_export)
