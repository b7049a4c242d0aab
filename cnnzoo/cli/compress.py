"""``cnnzoo compress``: Deep Compression (Han, Mao, Dally 2016) of a run into a .cnnz file."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cnnzoo.cli.common import add_json, add_model_kwargs, add_model_source, model_kwargs, pretrained_arg
from cnnzoo.cli.train import add_log_flags
from cnnzoo.compression.kmeans import INITS


def cmd_compress(args: argparse.Namespace) -> Any:
    from cnnzoo.compression.pipeline import compress, report_markdown

    report = compress(args.checkpoint, args.out, model_name=args.model, pretrained=pretrained_arg(args),
                      dataset=args.dataset, data_dir=args.data_dir,
                      prune_quality=args.prune_quality, sparsity=args.sparsity, bits=args.bits,
                      prune_iters=args.prune_iters, prune_epochs=args.prune_epochs, final_epochs=args.final_epochs,
                      quant_epochs=args.quant_epochs, lr=args.lr, centroid_lr=args.centroid_lr,
                      weight_decay=args.weight_decay, batch_size=args.batch_size, init=args.init,
                      dense_dtype=args.dense_dtype, train_subset=args.train_subset, distill=args.distill,
                      crop_padding=args.crop_padding, flip=args.flip, channels_last=args.channels_last,
                      seed=args.seed, model_kwargs=model_kwargs(args), threads=args.threads, log=args.log or [],
                      **({} if args.log_every is None else {"log_every": args.log_every}),
                      progress=not args.no_progress and not args.json)
    print(report_markdown(report))
    out = Path(args.out)
    print(f"wrote {out} and {out.with_suffix('.report.json')}, {out.with_suffix('.report.md')}")
    return report


def _add_schedule_args(s: argparse.ArgumentParser) -> None:
    s.add_argument("--prune-iters", type=int, default=4, help="pruning reaches its target in this many steps")
    s.add_argument("--prune-epochs", type=float, default=3.0, help="retraining epochs after each pruning step")
    s.add_argument("--final-epochs", type=float,
                   help="retraining epochs after the last pruning step (default: tuned per model, else 8)")
    s.add_argument("--quant-epochs", type=float, help="centroid fine-tuning epochs (default: tuned per model, else 2)")
    s.add_argument("--lr", type=float, help="Adam learning rate of the pruned retraining (default: per model, else 1e-3)")
    s.add_argument("--centroid-lr", type=float,
                   help="Adam learning rate of the shared values (default: per model, else 1e-4)")
    s.add_argument("--weight-decay", type=float,
                   help="decoupled weight decay of the retrained conv/linear weights (default: per model, else 0)")
    s.add_argument("--batch-size", type=int, default=128)
    s.add_argument("--train-subset", type=int, help="retrain on a random subset of this many images")
    s.add_argument("--distill", action=argparse.BooleanOptionalAction,
                   help="retrain against the uncompressed model's softened outputs too (knowledge distillation; "
                        "default: per model, else off)")
    s.add_argument("--crop-padding", type=int,
                   help="retrain on random crops shifted up to N pixels (default: per model, else 0)")
    s.add_argument("--flip", action=argparse.BooleanOptionalAction,
                   help="retrain on random horizontal flips too (default: per model, else off)")
    s.add_argument("--channels-last", action="store_true",
                   help="retrain in channels-last layout: faster convolutions on the CPU, another rounding path")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("compress", help="Deep Compression: prune, quantize, Huffman-code a run into a .cnnz file")
    add_model_source(s)
    s.add_argument("--out", required=True,
                   help="the .cnnz file to write (report: <stem>.report.json/.md beside it); until it is written, "
                        "OUT.partial keeps each finished pruning step, and the same command run again continues from it")
    s.add_argument("--dataset", help="default: the dataset the run was trained on")
    s.add_argument("--data-dir")
    how = s.add_mutually_exclusive_group()
    how.add_argument("--prune-quality", type=float, help="prune |w| < Q x std(w) in every layer (the paper's rule)")
    how.add_argument("--sparsity", help="fractions to prune, e.g. 'c5=0.96,f6=0.93,conv=0.6' (default: tuned per model)")
    s.add_argument("--bits", help="codebook bits per layer, e.g. 'conv=8,fc=5' or 'c5=4' (default: tuned per model)")
    s.add_argument("--init", choices=INITS, default="linear", help="k-means initialisation (the paper's best: linear)")
    s.add_argument("--dense-dtype", choices=["fp16", "fp32"], default="fp16",
                   help="storage of codebooks, biases and batch-norm tensors")
    _add_schedule_args(s)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int)
    s.add_argument("--no-progress", action="store_true")
    add_log_flags(s)  # the retraining's logs: <OUT stem>.logs/ beside OUT
    add_model_kwargs(s, help="arguments of the model's constructor, on top of those the checkpoint records")
    add_json(s)
    s.set_defaults(func=cmd_compress)
