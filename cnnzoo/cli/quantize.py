"""``cnnzoo quantize``: post-training static int8 quantization to an ONNX file."""
from __future__ import annotations

import argparse
from typing import Any

from cnnzoo.cli.common import (
    add_json,
    add_model_kwargs,
    add_model_source,
    model_kwargs,
    pretrained_arg,
)


def cmd_quantize(args: argparse.Namespace) -> Any:
    from cnnzoo.inference.quantize import format_report, quantize

    keep = [] if args.keep_fp32 == "none" else [k.strip() for k in args.keep_fp32.split(",") if k.strip()]
    report = quantize(args.out, checkpoint=args.checkpoint, model=args.model, pretrained=pretrained_arg(args),
                      model_kwargs=model_kwargs(args), dataset=args.dataset, data_dir=args.data_dir,
                      calib_images=args.calib_images, check_images=args.check_images, backend=args.backend,
                      keep_fp32=keep, int8_format=args.int8_format, seed=args.seed)
    print(format_report(report))
    return report


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from cnnzoo.data.datasets import DATASETS
    from cnnzoo.inference.quantize import (
        DEFAULT_INT8_FORMAT,
        DEFAULT_KEEP_FP32,
        INT8_FORMATS,
        KEEP_FP32,
        QUANT_BACKENDS,
    )

    s = sub.add_parser("quantize", help="post-training static int8 quantization to an ONNX file (QDQ, "
                                        "per-channel weights, calibrated on the training split)")
    add_model_source(s)
    s.add_argument("--out", required=True, help="output file, e.g. model.int8.onnx")
    s.add_argument("--calib-images", type=int, default=512, help="calibration images (default 512)")
    s.add_argument("--check-images", type=int, default=256,
                   help="test images on which the int8 top-1 is compared with fp32's (default 256)")
    s.add_argument("--dataset", choices=DATASETS,
                   help="calibration data (default: the checkpoint's; synthetic for a model built from a name)")
    s.add_argument("--data-dir", help="dataset folder (default: the checkpoint's)")
    s.add_argument("--backend", choices=QUANT_BACKENDS, default="onnxruntime",
                   help="quantizer: ONNX Runtime's quantize_static (default) or NNCF (pip install 'cnnzoo[openvino]')")
    s.add_argument("--int8-format", choices=tuple(INT8_FORMATS), default=DEFAULT_INT8_FORMAT,
                   help="ONNX Runtime's activation x weight types: u8s8-reduce-range (default: 7-bit weights, the same "
                        "results on CPUs with and without VNNI), u8s8 (8-bit weights; on CPUs without VNNI its 16-bit "
                        "pair sums can saturate), u8u8 (no saturation, 2-3x slower on VNNI/AMX)")
    s.add_argument("--keep-fp32", default=",".join(DEFAULT_KEEP_FP32) or "none", metavar="LAYERS",
                   help=f"comma-separated layers left in fp32: {', '.join(KEEP_FP32)}, or none "
                        f"(default: {','.join(DEFAULT_KEEP_FP32) or 'none'})")
    s.add_argument("--seed", type=int, default=0, help="which calibration images")
    add_model_kwargs(s)
    add_json(s)
    s.set_defaults(func=cmd_quantize)
