"""``cnnzoo bench``: throughput and latency against the reference implementation and the matmul peak."""
from __future__ import annotations

import argparse
import sys
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
from cnnzoo.studies.bench import BACKENDS, PRECISIONS

DEFAULT_BACKENDS = ("torch", "onnxruntime")


def cmd_bench(args: argparse.Namespace) -> Any:
    from cnnzoo.studies.bench import benchmark, format_table, optimize_backends_for, variant_pairs

    backends = args.backend or (list(DEFAULT_BACKENDS) if args.precision else [])
    pairs, skipped = variant_pairs(backends, args.precision or (["fp32"] if backends else []), args.device)
    report = benchmark(args.models, mode=args.mode, batch_size=args.batch_size, input_size=input_size(args),
                       threads=args.threads, device=args.device, amp=args.amp, channels_last=args.channels_last,
                       reference=args.reference, optimized=args.optimized,
                       optimize_backends=optimize_backends_for(args.device, args.compile), variants=pairs,
                       warmup=args.warmup,
                       iters=args.iters, progress=not args.no_progress and sys.stderr.isatty() or args.progress,
                       model_kwargs=model_kwargs(args), pretrained=pretrained_arg(args))
    report["skipped_variants"] = skipped
    print(format_table(report))
    for line in skipped:
        print(f"not timed: {line}")
    return report


def add_parsers(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("bench", help="throughput/latency vs the reference implementation and the matmul peak")
    s.add_argument("models", nargs="+", help="registered model names or exported .onnx files")
    s.add_argument("--mode", choices=["infer", "train", "both"], default="infer")
    s.add_argument("--batch-size", type=int, default=8)
    add_input_size(s, help="default: each model's")
    s.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    s.add_argument("--backend", nargs="+", choices=BACKENDS,
                   help="time our model deployed on these backends too (default with --precision: "
                        f"{' '.join(DEFAULT_BACKENDS)}; openvino needs pip install 'cnnzoo[openvino]')")
    s.add_argument("--precision", nargs="+", choices=PRECISIONS,
                   help="... in these precisions (default with --backend: fp32); every backend x precision "
                        "that exists is timed, interleaved with the others; int8 beside --reference also times "
                        "the reference quantized plainly by ONNX Runtime (its peer)")
    s.add_argument("--amp", action="store_true", help="ours and the reference in bfloat16 autocast, the matmul peak "
                                                      "in bfloat16 (torch at --precision bf16)")
    s.add_argument("--channels-last", action="store_true", help="channels_last memory format for model and input")
    s.add_argument("--reference", action="store_true", help="also time the torchvision/timm implementation")
    s.add_argument("--optimized", action="store_true", help="also time cnnzoo.optimize_for_inference, the fastest "
                                                            "lossless backend (infer mode)")
    s.add_argument("--compile", action="store_true",
                   help="let --optimized try torch.compile too (slow warm-up: tens of seconds per model on a CPU)")
    s.add_argument("--warmup", type=int, default=3, help="warm-up iterations per variant (default 3)")
    s.add_argument("--iters", type=int, default=10, help="timed iterations per variant (default 10)")
    s.add_argument("--progress", action="store_true", help="progress line even when stderr is not a terminal")
    s.add_argument("--no-progress", action="store_true")
    add_model_source(s, checkpoint=False, model=False)
    add_model_kwargs(s, help="arguments of each model's constructor that takes them (not the reference's)")
    add_json(s)
    s.set_defaults(func=cmd_bench)
