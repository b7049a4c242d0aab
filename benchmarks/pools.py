"""The pools of the zoo alone: torch's layers (NCHW) against cnnzoo.models.layers.MaxPool2d / AvgPool2d,
which pool in channels-last layout on the CPU (in training, max pools run their forward so and
torch's NCHW backward). Inference, and a training step (forward and backward). The "Pooling in
channels-last" tables of BENCHMARKS.md. Usage: python benchmarks/pools.py [THREADS]"""
import sys
import time

import torch
from torch import nn

from cnnzoo.models.layers import AvgPool2d, MaxPool2d

# (kind, batch, input C x H x W, kernel, stride, padding, ceil_mode, where in the zoo)
POOLS = [
    ("max", 8, (64, 112, 112), 3, 2, 1, False, "ResNet stem"),
    ("max", 8, (64, 224, 224), 2, 2, 0, False, "VGG pool 1"),
    ("max", 8, (128, 112, 112), 2, 2, 0, False, "VGG pool 2"),
    ("max", 8, (256, 56, 56), 2, 2, 0, False, "VGG pool 3"),
    ("max", 8, (512, 28, 28), 2, 2, 0, False, "VGG pool 4"),
    ("max", 8, (192, 56, 56), 3, 2, 0, True, "GoogLeNet"),
    ("max", 8, (256, 28, 28), 3, 1, 1, True, "GoogLeNet branch"),
    ("max", 8, (480, 14, 14), 3, 1, 1, True, "GoogLeNet branch"),
    ("max", 8, (64, 147, 147), 3, 2, 0, False, "Inception v3 stem"),
    ("avg", 8, (192, 35, 35), 3, 1, 1, False, "Inception v3 branch"),
    ("avg", 8, (768, 17, 17), 3, 1, 1, False, "Inception v3 branch"),
    ("max", 128, (20, 24, 24), 2, 2, 0, False, "lenet5_caffe pool 1 (compress batch)"),
    ("max", 128, (50, 8, 8), 2, 2, 0, False, "lenet5_caffe pool 2 (compress batch)"),
]


def median_ms(fn, iters=7):
    fn(), fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[iters // 2] * 1e3


def main() -> None:
    torch.set_num_threads(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
    print("| pool (batch x C x H x W) | where | infer torch ms | infer cnnzoo ms | speed-up | "
          "train torch ms | train cnnzoo ms | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, batch, shape, k, s, p, ceil, where in POOLS:
        torchs = (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(k, s, p, ceil_mode=ceil)
        ours = (MaxPool2d if kind == "max" else AvgPool2d)(k, s, p, ceil_mode=ceil)
        x = torch.randn(batch, *shape)
        with torch.inference_mode():
            a, b = median_ms(lambda: torchs(x)), median_ms(lambda: ours(x))
            assert torch.equal(torchs(x), ours(x))
        xg = x.clone().requires_grad_()
        g = torch.randn_like(torchs(x))
        # relu: the layer before, as in the networks (its output is the pool's input and gradient)
        c = median_ms(lambda: torchs(torch.relu(xg)).backward(g))
        d = median_ms(lambda: ours(torch.relu(xg)).backward(g))
        name = (f"{kind} {k}x{k}/{s}{f' pad {p}' if p else ''}{' ceil' if ceil else ''}, "
                f"{batch}x{'x'.join(map(str, shape))}")
        print(f"| {name} | {where} | {a:.1f} | {b:.1f} | {a / b:.2f}x | {c:.1f} | {d:.1f} | {c / d:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
