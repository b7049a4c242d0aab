"""The pools of the zoo alone, NCHW against a detour through channels-last (what
cnnzoo.layers.MaxPool2d / AvgPool2d do in CPU inference): inference and a training step, at batch 8.
The "Pooling in channels-last" table of BENCHMARKS.md. Usage: python benchmarks/pools.py [THREADS]"""
import sys
import time

import torch
import torch.nn.functional as F

CL = torch.channels_last
# (kind, input C x H x W, kernel, stride, padding, ceil_mode, where in the zoo)
POOLS = [
    ("max", (64, 112, 112), 3, 2, 1, False, "ResNet stem"),
    ("max", (64, 224, 224), 2, 2, 0, False, "VGG pool 1"),
    ("max", (128, 112, 112), 2, 2, 0, False, "VGG pool 2"),
    ("max", (256, 56, 56), 2, 2, 0, False, "VGG pool 3"),
    ("max", (512, 28, 28), 2, 2, 0, False, "VGG pool 4"),
    ("max", (192, 56, 56), 3, 2, 0, True, "GoogLeNet"),
    ("max", (256, 28, 28), 3, 1, 1, True, "GoogLeNet branch"),
    ("max", (480, 14, 14), 3, 1, 1, True, "GoogLeNet branch"),
    ("max", (64, 147, 147), 3, 2, 0, False, "Inception v3 stem"),
    ("avg", (192, 35, 35), 3, 1, 1, False, "Inception v3 branch"),
    ("avg", (768, 17, 17), 3, 1, 1, False, "Inception v3 branch"),
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
    print("| pool (input C x H x W) | where | infer NCHW ms | infer via channels-last ms | speed-up | "
          "train NCHW ms | train via channels-last ms | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for kind, shape, k, s, p, ceil, where in POOLS:
        pool = F.max_pool2d if kind == "max" else F.avg_pool2d
        f = lambda t: pool(t, k, s, p, ceil_mode=ceil)
        x = torch.randn(8, *shape)
        with torch.inference_mode():
            a = median_ms(lambda: f(x))
            b = median_ms(lambda: f(x.contiguous(memory_format=CL)).contiguous())
            assert torch.equal(f(x), f(x.contiguous(memory_format=CL)).contiguous())
        xg = x.clone().requires_grad_()
        g = torch.randn_like(f(x))
        c = median_ms(lambda: f(torch.relu(xg)).backward(g))  # relu: the layer before sees the gradient's layout
        d = median_ms(lambda: f(torch.relu(xg).contiguous(memory_format=CL)).contiguous().backward(g))
        name = f"{kind} {k}x{k}/{s}{f' pad {p}' if p else ''}{' ceil' if ceil else ''}, {'x'.join(map(str, shape))}"
        print(f"| {name} | {where} | {a:.1f} | {b:.1f} | {a / b:.2f}x | {c:.1f} | {d:.1f} | {c / d:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
