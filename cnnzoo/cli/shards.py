"""``cnnzoo shards``: an image folder written as WebDataset tar shards."""
from __future__ import annotations

import argparse
from typing import Any

from cnnzoo.cli.common import (
    add_json,
)


def cmd_shards(args: argparse.Namespace) -> Any:
    from cnnzoo.data.shards import write_shards

    meta = write_shards(args.data_dir, args.out, args.shard_size, args.seed)
    for split, info in meta["splits"].items():
        print(f"{split}: {info['images']} images in {args.out}/{info['pattern']}")
    print(f"train with: cnnzoo train --dataset webdataset --data-dir '{args.out}/{meta['splits']['train']['pattern']}'")
    return meta


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("shards", help="write an image folder as WebDataset tar shards",
                       description="Copy DIR/train/<class>/* (shuffled) and DIR/val/<class>/* into tar shards "
                                   "of --shard-size images, with meta.json (class names, image counts).")
    s.add_argument("--data-dir", required=True, help="image folder with train/<class>/* and optionally val/<class>/*")
    s.add_argument("--out", required=True, help="folder for train-NNNNNN.tar, val-NNNNNN.tar and meta.json")
    s.add_argument("--shard-size", type=int, default=1000, help="images per shard (default: 1000)")
    s.add_argument("--seed", type=int, default=0, help="seed of the training images' order (default: 0)")
    add_json(s)
    s.set_defaults(func=cmd_shards)
