"""``cnnzoo eval``: top-1, top-5 and loss of a checkpoint on a dataset."""
from __future__ import annotations

import argparse
from typing import Any

from cnnzoo.cli.common import (
    add_checkpoint_source,
    add_json,
    model_kwargs,
    pretrained_arg,
)


def cmd_eval(args: argparse.Namespace) -> Any:
    from cnnzoo.inference.predict import evaluate_checkpoint

    res = evaluate_checkpoint(args.checkpoint, args.dataset, data_dir=args.data_dir, model_name=args.model,
                              model_kwargs=model_kwargs(args), batch_size=args.batch_size, tta_flip=args.tta_flip,
                              tta_shift=args.tta_shift, pretrained=pretrained_arg(args))
    print(f"{res['model']} on {res['dataset']} ({res['images']} images): top-1 {res['top1']:.4f} "
          f"top-5 {res['top5']:.4f} loss {res['loss']:.4f}")
    return res


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("eval", help="top-1 / top-5 / loss of a checkpoint on a dataset")
    add_checkpoint_source(s)
    s.add_argument("--dataset", default=None, help="default: the dataset the run was trained on")
    s.add_argument("--data-dir")
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--tta-flip", action="store_true", help="average each image's logits with its mirror image's")
    s.add_argument("--tta-shift", type=int, default=0, metavar="PIXELS",
                   help="also average over the image moved 1 to this many pixels up, down, left and right")
    add_json(s)
    s.set_defaults(func=cmd_eval)
