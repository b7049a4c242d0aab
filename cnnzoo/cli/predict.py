"""``cnnzoo predict``: the top-k classes of image files."""
from __future__ import annotations

import argparse
from typing import Any

from cnnzoo.cli.common import (
    add_checkpoint_source,
    add_json,
    model_kwargs,
    pretrained_arg,
)


def cmd_predict(args: argparse.Namespace) -> Any:
    from cnnzoo.inference.predict import predict_files

    results = predict_files(args.checkpoint, args.images, topk=args.topk, model_name=args.model,
                            model_kwargs=model_kwargs(args), pretrained=pretrained_arg(args))
    for r in results:
        print(r["image"])
        for p in r["top"]:
            print(f"  {p['class']} {p['prob']:.2f}")
    return results


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("predict", help="top-k classes for image files")
    add_checkpoint_source(s)
    s.add_argument("images", nargs="+")
    s.add_argument("--topk", type=int, default=5)
    add_json(s)
    s.set_defaults(func=cmd_predict)
