"""``cnnzoo models``, ``cnnzoo summary`` and ``cnnzoo factorize``: what the networks are made of."""
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


def print_columns(cols: list[str], rows: list[list[str]]) -> None:
    """A header and rows of text, each column as wide as its widest cell."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    for line in [cols, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip())


def cmd_models(args: argparse.Namespace) -> Any:
    from cnnzoo.registry import model_table

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
    from cnnzoo.hub import catalogue_row, list_weights

    rows = [catalogue_row(w) for w in list_weights(args.pattern)]
    if not rows:
        raise ValueError(f"no published weights for models matching {args.pattern!r} (`cnnzoo weights` lists all)")
    cols = ["model", "tag", "source", "size_mb", "top1", "cached", "path"]
    text = [[r["model"], r["tag"], r["source"], "-" if r["size_mb"] is None else f"{r['size_mb']:.1f}",
             "-" if r["top1"] is None else f"{r['top1']:.2f}", "yes" if r["cached"] else "no", r["path"]] for r in rows]
    print_columns(cols, text)
    return rows


def cmd_summary(args: argparse.Namespace) -> Any:
    from cnnzoo import analysis
    from cnnzoo.registry import create_model, get_model_cfg

    size = input_size(args) or get_model_cfg(args.model)["input_size"]
    model = create_model(args.model, num_classes=args.num_classes, in_chans=size[0], pretrained=pretrained_arg(args),
                         **model_kwargs(args))
    result = analysis.summary(model, size, depth=args.depth)
    print(analysis.format_summary(result))
    return analysis.summary_to_json(result)


def cmd_factorize(args: argparse.Namespace) -> Any:
    from cnnzoo import analysis

    result = analysis.factorize(args.kernel, args.channels, args.channels, args.size)
    print(analysis.format_factorize(result))
    if args.plot:
        analysis.plot_factorize(result, args.plot)
        print(f"chart written to {args.plot}")
    return analysis.factorize_to_json(result)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("models", help="list registered models with params and GMACs")
    s.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    s.add_argument("--no-macs", action="store_true", help="skip counting MACs (faster)")
    add_json(s)
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("weights", help="published weight files: model, tag, source, size, ImageNet top-1, cached",
                       description="Published weight files of the zoo's models (torchvision's, and timm's on the "
                                   "Hugging Face hub), where they are cached or would be, and their ImageNet-1k top-1 "
                                   "(- where the reference's package does not record it). Use them with "
                                   "--model NAME --pretrained, or --weights TAG.")
    s.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern of model names, e.g. 'resnet*'")
    add_json(s)
    s.set_defaults(func=cmd_weights)

    s = sub.add_parser("summary", help="per-layer shapes, parameters, MACs and receptive fields")
    s.add_argument("model")
    add_input_size(s)
    s.add_argument("--num-classes", type=int, default=1000)
    s.add_argument("--depth", type=int, default=3, help="module nesting depth to show")
    add_model_source(s, checkpoint=False, model=False)
    add_model_kwargs(s)
    add_json(s)
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("factorize", help="one kxk conv vs stacked 3x3 vs 1xk+kx1 (Simonyan & Zisserman 2014, "
                                         "VGG section 2.3; Szegedy et al. 2016, Inception v3 section 3)")
    s.add_argument("--kernel", type=int, required=True)
    s.add_argument("--channels", type=int, required=True)
    s.add_argument("--size", type=int, default=32)
    s.add_argument("--plot", metavar="PNG")
    add_json(s)
    s.set_defaults(func=cmd_factorize)
