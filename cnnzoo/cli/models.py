"""``cnnzoo models`` and ``cnnzoo weights``: the registered networks and their published weight files."""
from __future__ import annotations

import argparse
from typing import Any

from cnnzoo.cli.common import (
    add_json,
)


def print_columns(cols: list[str], rows: list[list[str]]) -> None:
    """A header and rows of text, each column as wide as its widest cell."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    for line in [cols, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())


def cmd_models(args: argparse.Namespace) -> Any:
    from cnnzoo.models.factory import model_table

    rows = model_table(args.pattern, macs=not args.no_macs)
    if not rows:
        raise ValueError(f"no model matches {args.pattern!r}")
    cols = ["name", "family", "year", "params", "gmacs", "input_size", "verified_against"]
    text = [[str(r["name"]), r["family"], str(r["year"]), f"{r['params']:,}",
             "-" if r["gmacs"] is None else f"{r['gmacs']:.3f}", "x".join(map(str, r["input_size"])),
             r["verified_against"]] for r in rows]
    print_columns(cols, text)
    return rows


def cmd_weights(args: argparse.Namespace) -> Any:
    from cnnzoo.models.hub import catalogue_row, list_weights

    rows = [catalogue_row(w) for w in list_weights(args.pattern)]
    if not rows:
        raise ValueError(f"no published weights for models matching {args.pattern!r} (`cnnzoo weights` lists all)")
    cols = ["model", "tag", "source", "size_mb", "published_top1", "cached", "path"]
    text = [[r["model"], r["tag"], r["source"], "-" if r["size_mb"] is None else f"{r['size_mb']:.1f}",
             "-" if r["top1"] is None else f"{r['top1']:.2f}", "yes" if r["cached"] else "no", r["path"]] for r in rows]
    print_columns(cols, text)
    return rows


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("models", help="list registered models with params and GMACs")
    s.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    s.add_argument("--no-macs", action="store_true", help="skip counting MACs (faster)")
    add_json(s)
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("weights", help="published weight files: model, tag, source, size, published ImageNet top-1, cached",
                       description="Published weight files of the zoo's models (torchvision's, and timm's on the "
                                   "Hugging Face hub), where they are cached or would be, and the ImageNet-1k top-1 their "
                                   "publisher states (not measured here; - where the reference's package does not "
                                   "record it). Use them with "
                                   "--model NAME --pretrained, or --weights TAG.")
    s.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern of model names, e.g. 'resnet*'")
    add_json(s)
    s.set_defaults(func=cmd_weights)
