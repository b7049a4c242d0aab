"""optimize_for_inference on CUDA: every candidate (folded eager, torch.compile) agrees with the eager
model within cnnzoo.inference.onnx.ATOL when checked in full fp32, and how far the two are apart when both run
in TF32 (the default).
Usage (a CUDA machine, repo root): python benchmarks/gpu_optimize_check.py [--compile] [MODEL ...]
(--compile: torch.compile too, tens of seconds per model)"""
import sys
import warnings

import torch

from cnnzoo import create_model
from cnnzoo.inference.export import cuda_tf32, optimize_for_inference
from cnnzoo.inference.onnx import ATOL, check_against


def main(argv: list[str]) -> None:
    compile_too = "--compile" in argv
    names = [a for a in argv if a != "--compile"] or ["resnet50", "mobilenet_v1", "mobilenet_v2", "googlenet",
                                                       "inception_v3", "vgg16_bn"]
    torch.manual_seed(0)
    for name in names:
        check_model(name, compile_too)


def check_model(name: str, compile_too: bool) -> None:
    model = create_model(name).cuda().eval()
    x = torch.randn(8, *model.pretrained_cfg["input_size"], device="cuda")
    for backends in (("eager",), ("compile",)) if compile_too else (("eager",),):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                fast = optimize_for_inference(model, x, backends=backends)
            except ValueError as exc:
                print(f"{name} {backends[0]}: REFUSED ({exc}; {[str(w.message) for w in caught]})", flush=True)
                continue
        with cuda_tf32(False):
            strict = check_against(model, fast, x, ATOL)
        tf32 = check_against(model, fast, x, ATOL)  # both in TF32, as they run by default
        print(f"{name} {backends[0]}: fp32 max|diff| {strict['max_abs_diff']:.2e} (limit {strict['limit']:.2e}, "
              f"ok {strict['ok']}); TF32 max|diff| {tf32['max_abs_diff']:.2e}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
