"""The ``cnnzoo`` command: argparse sub-commands, each a thin call into the library.

Every command prints a human-readable result; with ``--json`` its last line is one JSON object.
Errors a user can fix (bad names, missing files, mismatched checkpoints) end with a one-line
message and exit status 2, not a traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from cnnzoo.bench import add_bench_parser
from cnnzoo.compare import add_compare_parser
from cnnzoo.compress import add_compress_parser
from cnnzoo.degradation import add_degradation_parser
from cnnzoo.export import add_export_parser
from cnnzoo.league import add_league_parser
from cnnzoo.train import RECIPES, TrainConfig


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, default=str))


# --------------------------------------------------------------------------------------------------
# commands


def cmd_models(args: argparse.Namespace) -> int:
    from cnnzoo.registry import model_table

    rows = model_table(args.pattern, macs=not args.no_macs)
    if not rows:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 2
    cols = ["name", "family", "year", "params", "gmacs", "input_size", "verified_against"]
    text = [[str(r["name"]), r["family"], str(r["year"]), f"{r['params']:,}",
             "-" if r["gmacs"] is None else f"{r['gmacs']:.3f}", "x".join(map(str, r["input_size"])),
             r["verified_against"]] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for t in text:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)))
    if args.json:
        _print_json(rows)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from cnnzoo.train import resume_training, train

    start = time.perf_counter()
    if args.resume:
        summary = resume_training(args.resume, epochs=args.epochs, progress=not args.no_progress)
    else:
        overrides = {k: getattr(args, k) for k in
                     ("model", "dataset", "data_dir", "epochs", "batch_size", "lr", "opt", "sched", "warmup_epochs",
                      "weight_decay", "label_smoothing", "seed", "out", "crop_padding", "flip", "threads",
                      "train_subset", "device", "checkpoint_every", "tta_flip", "amp") if getattr(args, k) is not None}
        if args.input_size:
            overrides["input_size"] = tuple(args.input_size)
        overrides.update(channels_last=args.channels_last, skip_bad_images=args.skip_bad_images,
                         deterministic=args.deterministic, sync_bn=args.sync_bn)
        cfg = TrainConfig.from_recipe(args.recipe, **overrides) if args.recipe else TrainConfig(**overrides)
        summary = train(cfg, progress=not args.no_progress)
    summary["wall_seconds"] = round(time.perf_counter() - start, 2)
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return 0
    print(f"{summary['model']} on {summary['dataset']}: test top-1 {summary['test_top1']:.4f} "
          f"top-5 {summary['test_top5']:.4f} | train time {summary['train_seconds']:.1f} s, wall time "
          f"{summary['wall_seconds']:.1f} s | run {summary['run_dir']}")
    if args.json:
        _print_json(summary)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from cnnzoo.predict import evaluate_checkpoint

    res = evaluate_checkpoint(args.checkpoint, args.dataset, data_dir=args.data_dir, model_name=args.model,
                              batch_size=args.batch_size, tta_flip=args.tta_flip)
    print(f"{res['model']} on {res['dataset']} ({res['images']} images): top-1 {res['top1']:.4f} "
          f"top-5 {res['top5']:.4f} loss {res['loss']:.4f}")
    if args.json:
        _print_json(res)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnzoo.predict import predict_files

    results = predict_files(args.checkpoint, args.images, topk=args.topk, model_name=args.model)
    for r in results:
        print(r["image"])
        for p in r["top"]:
            print(f"  {p['prob']:.4f}  {p['class']}")
    if args.json:
        _print_json(results)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnzoo import analysis
    from cnnzoo.registry import create_model, get_model_cfg

    cfg = get_model_cfg(args.model)
    input_size = tuple(args.input_size) if args.input_size else cfg["input_size"]
    model = create_model(args.model, num_classes=args.num_classes, in_chans=input_size[0])
    result = analysis.summary(model, input_size, depth=args.depth)
    print(analysis.format_summary(result))
    if args.json:
        _print_json(analysis.summary_to_json(result))
    return 0


def cmd_factorize(args: argparse.Namespace) -> int:
    from cnnzoo import analysis

    result = analysis.factorize(args.kernel, args.channels, args.channels, args.size)
    print(analysis.format_factorize(result))
    if args.plot:
        analysis.plot_factorize(result, args.plot)
        print(f"chart written to {args.plot}")
    if args.json:
        _print_json(analysis.factorize_to_json(result))
    return 0


# --------------------------------------------------------------------------------------------------
# parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cnnzoo", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    defaults = TrainConfig()

    s = sub.add_parser("models", help="list registered models with params and GMACs")
    s.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    s.add_argument("--no-macs", action="store_true", help="skip counting MACs (faster)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("train", help="train a model (defaults: LeNet-5 on Fashion-MNIST)")
    s.add_argument("--model", help=f"registered model name (default {defaults.model})")
    s.add_argument("--dataset", help="fashion-mnist | mnist | imagefolder | synthetic (default fashion-mnist)")
    s.add_argument("--data-dir", help="folder with the IDX files, or DIR/train/<class>/* for imagefolder")
    s.add_argument("--epochs", type=int, help=f"default {defaults.epochs}")
    s.add_argument("--batch-size", type=int, help=f"default {defaults.batch_size}")
    s.add_argument("--lr", type=float, help=f"peak learning rate (default {defaults.lr})")
    s.add_argument("--opt", choices=["sgd", "adamw"])
    s.add_argument("--sched", choices=["cosine", "linear", "step", "none"])
    s.add_argument("--warmup-epochs", type=float)
    s.add_argument("--weight-decay", type=float)
    s.add_argument("--label-smoothing", type=float)
    s.add_argument("--crop-padding", type=int, help="random-crop augmentation, pixels of padding")
    s.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flips")
    s.add_argument("--tta-flip", action=argparse.BooleanOptionalAction, default=None,
                   help="evaluate on each image and its mirror image, logits averaged")
    s.add_argument("--recipe", choices=sorted(RECIPES),
                   help="start from a named set of settings (see cnnzoo.train.RECIPES); other flags override it")
    s.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"))
    s.add_argument("--train-subset", type=int, help="train on a random subset of this many images")
    s.add_argument("--skip-bad-images", action="store_true",
                   help="imagefolder: go on past undecodable files, and report them")
    s.add_argument("--seed", type=int)
    s.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    s.add_argument("--device", help="cpu (default), cuda or cuda:N")
    s.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bfloat16 autocast (fast on GPUs and on CPUs with AVX512-BF16 or AMX)")
    s.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="NHWC memory format (default on)")
    s.add_argument("--checkpoint-every", type=int, metavar="STEPS",
                   help="also checkpoint every STEPS steps mid-epoch (default: at epoch ends only)")
    s.add_argument("--deterministic", action="store_true",
                   help="bit-reproducible run (deterministic kernels, fixed thread count)")
    s.add_argument("--sync-bn", action="store_true", help="torchrun on CUDA: batch-norm statistics over all ranks")
    s.add_argument("--out", help="run folder (default runs/<model>-<dataset>-<time>)")
    s.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="top-1 / top-5 / loss of a checkpoint on a dataset")
    s.add_argument("--checkpoint", required=True, help="run folder or weights file")
    s.add_argument("--dataset", default=None, help="default: the dataset the run was trained on")
    s.add_argument("--data-dir")
    s.add_argument("--model", help="model name, for weight files without cnnzoo metadata")
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--tta-flip", action="store_true", help="average each image's logits with its mirror image's")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("predict", help="top-k classes for image files")
    s.add_argument("--checkpoint", required=True, help="run folder or weights file")
    s.add_argument("images", nargs="+")
    s.add_argument("--topk", type=int, default=5)
    s.add_argument("--model", help="model name, for weight files without cnnzoo metadata")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("summary", help="per-layer shapes, parameters, MACs and receptive fields")
    s.add_argument("model")
    s.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"))
    s.add_argument("--num-classes", type=int, default=1000)
    s.add_argument("--depth", type=int, default=3, help="module nesting depth to show")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("factorize", help="one kxk conv vs stacked 3x3 vs 1xk+kx1 (seed 4.2, 5.2)")
    s.add_argument("--kernel", type=int, required=True)
    s.add_argument("--channels", type=int, required=True)
    s.add_argument("--size", type=int, default=32)
    s.add_argument("--plot", metavar="PNG")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_factorize)

    add_bench_parser(sub)
    add_export_parser(sub)
    add_compress_parser(sub)
    add_compare_parser(sub)
    add_league_parser(sub)
    add_degradation_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, OSError, FloatingPointError) as exc:
        print(f"cnnzoo {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cnnzoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
