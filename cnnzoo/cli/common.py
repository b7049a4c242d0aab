"""What several commands share: one definition of each common flag, and the error handling."""
from __future__ import annotations

import argparse
import ast
import ctypes
import json
import os
import re
import sys
from typing import Any

# A comma starts a new item only where KEY= follows, so values may hold commas: widths=(16,32,64).
_ITEM_START = re.compile(r",(?=\s*[A-Za-z_]\w*\s*=)")

# glibc's mallopt parameters, and the largest mmap threshold it accepts on a 64-bit system.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX = -1, -3, 32 << 20

# What a user can fix (bad names, missing files, mismatched checkpoints): one line, exit status 2.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, OSError, FloatingPointError)


class BoolOrWord(argparse.Action):
    """``--flag`` (True), ``--flag WORD`` (one of ``choices``, e.g. auto) and ``--no-flag`` (False):
    argparse's BooleanOptionalAction with an optional word."""

    def __init__(self, option_strings: list[str], dest: str, choices: tuple[str, ...], **kwargs: Any) -> None:
        negatives = ["--no-" + s[2:] for s in option_strings if s.startswith("--")]
        super().__init__([*option_strings, *negatives], dest, nargs="?", choices=choices, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        if option_string is not None and option_string.startswith("--no-"):
            if values is not None:
                parser.error(f"{option_string} takes no value, got {values!r}")
            values = False
        setattr(namespace, self.dest, True if values is None else values)


def keep_freed_memory() -> bool:
    """Have glibc's allocator keep the memory a process frees, not hand it back to the system.
    Each batch frees its activations; by default glibc hands most of that memory back and the
    next batch faults it in again, page by page, which made ``cnnzoo eval`` 1.5x slower
    (BENCHMARKS.md, "The fast recipes"). The process's memory then stays at its peak. Not done
    where ``CNNZOO_KEEP_FREED_MEMORY=0``; False where it did not take (another C library, or
    switched off)."""
    if os.environ.get("CNNZOO_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    # Both fixed: setting either stops glibc adapting the other, and a low mmap threshold would
    # send every tensor over 128 KiB to mmap, which faults in as before.
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text  # a bare word such as act=relu


def parse_kwargs(text: str) -> dict[str, Any]:
    """``"width_mult=0.5,act=relu"`` -> ``{"width_mult": 0.5, "act": "relu"}``: values are Python
    literals where they parse as one, else strings."""
    out = {}
    for item in _ITEM_START.split(text):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        out[key] = _literal(value.strip())
    return out


def merge_kwargs(given: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One dict from the repeated occurrences of a KEY=VALUE flag; later ones win."""
    merged: dict[str, Any] = {}
    for d in given or []:
        merged.update(d)
    return merged


def kwargs_flag(help: str) -> dict[str, Any]:
    """``add_argument`` keywords of a KEY=VALUE flag; ``merge_kwargs`` reads what it collects."""
    # One string per occurrence (action="append", not nargs="*"): positional arguments after the
    # flag, such as predict's image files, stay positional.
    return dict(action="append", type=parse_kwargs, metavar="KEY=VALUE[,KEY=VALUE]",
                help=f"{help}, e.g. width_mult=0.5,drop_rate=0.1 (Python literals; repeatable)")


def add_model_kwargs(p: argparse.ArgumentParser, help: str = "arguments of the model's constructor") -> None:
    p.add_argument("--model-kwargs", **kwargs_flag(help))


def model_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return merge_kwargs(args.model_kwargs)


def add_model_source(p: argparse.ArgumentParser, *, checkpoint: bool = True, model: bool = True) -> None:
    """Where a command's network comes from: one of our runs or weight files (``--checkpoint``), or a
    registered name (``--model``, or the command's positional name with ``model=False``) with
    published weights (``--pretrained``, ``--weights TAG|FILE``).
    ``--pretrained`` is a flag, not an optional value, so that a following image path stays positional."""
    if checkpoint:
        p.add_argument("--checkpoint", metavar="RUN_DIR|FILE",
                       help="a cnnzoo run folder or weights file (.safetensors, .onnx, .cnnz), or a Hugging Face "
                            "Hub repository in timm's layout (hf-hub:OWNER/NAME[@REVISION])")
    if model:
        p.add_argument("--model", help="registered model name (with --checkpoint: for weight files without "
                                       "cnnzoo metadata)")
    p.add_argument("--pretrained", action="store_true",
                   help="with --model: the model's default published weights (`cnnzoo weights` lists them)")
    p.add_argument("--weights", metavar="TAG|FILE|hf-hub:REPO",
                   help="with --model: published weights by tag (e.g. tv2_in1k), a torchvision, timm or "
                        "cnnzoo weights file, or a hub repository (hf-hub:OWNER/NAME); implies --pretrained")


def pretrained_arg(args: argparse.Namespace) -> bool | str | None:
    """What ``create_model(pretrained=...)`` gets from ``--pretrained`` / ``--weights``."""
    weights = getattr(args, "weights", None)
    if weights is not None or getattr(args, "pretrained", False):
        if getattr(args, "checkpoint", None):
            raise ValueError("--pretrained / --weights choose weights for --model; --checkpoint brings its own")
        if not (getattr(args, "model", None) or getattr(args, "models", None)):
            raise ValueError("--pretrained / --weights need --model NAME")
    return weights or (True if getattr(args, "pretrained", False) else None)


def add_input_size(p: argparse.ArgumentParser, help: str = "default: the model's") -> None:
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), help=help)


def input_size(args: argparse.Namespace) -> tuple[int, int, int] | None:
    return tuple(args.input_size) if args.input_size else None


def add_json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="last line of the output: the result as one JSON object")


def run_command(args: argparse.Namespace) -> int:
    """``args.func(args)``, which prints its human-readable result and returns its JSON-able one:
    with ``--json`` that is the last line of the output. The errors a user can fix are reported in
    one line (exit status 2)."""
    try:
        result = args.func(args)
    except USER_ERRORS as exc:
        print(f"cnnzoo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnzoo {args.command}: interrupted", file=sys.stderr)
        return 130
    if getattr(args, "json", False) and result is not None:
        print(json.dumps(result, default=str))
    return 0


def add_checkpoint_source(s: argparse.ArgumentParser) -> None:
    """--checkpoint or --model, and model arguments on top of those the checkpoint records."""
    add_model_source(s)
    add_model_kwargs(s, help="arguments of the model's constructor, on top of those the checkpoint records")
