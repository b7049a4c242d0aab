"""Training throughput of a recipe's network, step by step as the trainer runs it, with and without
each speed lever, against the machine's matmul peak.

    .venv/bin/python benchmarks/train_step_speed.py [--recipe fast] [--amp | --no-amp]
        [--levers eager nchw compile ...] [--steps 8] [--rounds 6]

Each lever builds the recipe's network as ``cnnzoo train`` does (``train.build_model``: the
whitened stem fitted to the data, the recipe's memory format), its optimiser and schedule, and
times real steps: the epoch's augmented batches, normalised, through ``engine.train_step`` with the
recipe's loss. The levers run interleaved, ``--steps`` steps each in turn for ``--rounds`` rounds,
so that each ratio pairs timings taken under the same machine load (``cnnzoo.studies.bench.paired_ratio``,
with its 90% bootstrap interval). The first 3 steps of each lever are timed apart: they hold
torch.compile's warm-up.

    eager                 the trainer as it is
    nchw                  contiguous (NCHW) tensors instead of channels-last
    compile               torch.compile(model, dynamic=False): inductor's fused C++ kernels
    compile-max-autotune  the same with mode="max-autotune-no-cudagraphs"
    bound-no-bn-act       batch norms and GELUs replaced by identities: not a network that trains,
                          the most that fusing them away could gain

GFLOP/s counts 6 x the MACs of a forward pass per image (forward and two backward products); the
peak is ``cnnzoo.studies.bench``'s (the best n x n matmul in the step's precision, measured before and after).
To time AVX2 kernels on a CPU that has AVX-512, run it with ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 TORCHINDUCTOR_CPP_MARCH=haswell``: torch's,
oneDNN's and MKL's kernels (the matmul peak and the classifier run on MKL) and the code inductor
compiles (256-bit vectors, no AVX-512 from the compiler) then stay within AVX2.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from cnnzoo.analysis import count_macs
from cnnzoo.studies.bench import matmul_peak, paired_ratio, paired_ratio_ci
from cnnzoo.training.config import RECIPES, TrainConfig
from cnnzoo.training.loop import (
    RunData,
    build_model,
    build_optimizer,
    build_scheduler,
    epoch_batches,
    load_run_data,
    memory_format,
    training_loss,
)
from cnnzoo.training.step import train_step
from cnnzoo.utils.distributed import World

LEVERS = ("eager", "nchw", "compile", "compile-max-autotune", "bound-no-bn-act")
WARMUP_STEPS = 3
ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "TORCHINDUCTOR_CPP_MARCH")


def strip_bn_act(net: nn.Module) -> None:
    """Replace every BatchNorm2d and GELU of ``net`` by an identity (the ``bound-no-bn-act`` lever)."""
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, (nn.BatchNorm2d, nn.GELU)):
                setattr(module, name, nn.Identity())


def build_step(lever: str, base: TrainConfig, data: RunData) -> Callable[[torch.Tensor, torch.Tensor, int], None]:
    """One training step of the trainer's loop (``train.train_epoch``) with ``lever`` applied."""
    cfg = dataclasses.replace(base, channels_last=base.channels_last and lever != "nchw")
    net, _, _ = build_model(cfg, data, World(), torch.device("cpu"))
    if lever == "bound-no-bn-act":
        strip_bn_act(net)
    opt = build_optimizer(net, cfg)
    sched = build_scheduler(opt, cfg, 10_000)
    model: nn.Module = net
    if lever.startswith("compile"):
        mode = "max-autotune-no-cudagraphs" if lever == "compile-max-autotune" else None
        model = torch.compile(net, dynamic=False, mode=mode)
    layout = memory_format(cfg)
    net.train()

    def step(x: torch.Tensor, y: torch.Tensor, n: int) -> None:
        x = data.normalize(x).contiguous(memory_format=layout)
        train_step(model, x, y, lambda out, y: training_loss(out, y, cfg.label_smoothing, n), opt, amp=cfg.amp,
                   scheduler=sched)

    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="fast", choices=sorted(RECIPES))
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False, help="bf16 autocast (default: fp32)")
    p.add_argument("--levers", nargs="+", default=list(LEVERS), choices=LEVERS, help="the first is the reference")
    p.add_argument("--steps", type=int, default=8, help="steps per lever per round")
    p.add_argument("--rounds", type=int, default=6)
    args = p.parse_args()

    base = TrainConfig.from_recipe(args.recipe, amp=args.amp, train_subset=2 * args.steps * 256)
    data = load_run_data(base, progress=False)
    batches = list(epoch_batches(data.train_ds, base, 0, 0, World()))
    dtype = torch.bfloat16 if args.amp else torch.float32
    peaks = [matmul_peak(torch.device("cpu"), dtype)]
    print(f"torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads, " + ", ".join(f"{k}={os.environ.get(k, '-')}" for k in ENV))
    if any(lever.startswith("compile") for lever in args.levers):
        from torch._inductor.cpu_vec_isa import pick_vec_isa

        print(f"inductor vector ISA: {pick_vec_isa()} ({pick_vec_isa().bit_width()}-bit)")
    steps = {}
    for lever in args.levers:
        steps[lever] = build_step(lever, base, data)
        t0 = time.perf_counter()
        for x, y, n in batches[:WARMUP_STEPS]:
            steps[lever](x, y, n)
        print(f"{lever}: first {WARMUP_STEPS} steps {time.perf_counter() - t0:.1f} s", flush=True)
    times: dict[str, list[float]] = {lever: [] for lever in args.levers}
    for r in range(args.rounds):
        block = batches[(r % 2) * args.steps:(r % 2 + 1) * args.steps]
        for lever, step in steps.items():
            t0 = time.perf_counter()
            for x, y, n in block:
                step(x, y, n)
            times[lever].append(time.perf_counter() - t0)
    peaks.append(matmul_peak(torch.device("cpu"), dtype))

    flops = 6 * count_macs(build_model(base, data, World(), torch.device("cpu"))[0], data.input_size)
    peak = max(peaks)
    ref = args.levers[0]
    print(f"{args.recipe}, {'bf16 autocast' if args.amp else 'fp32'}, batch {base.batch_size}, "
          f"{flops / 1e6:.1f} MFLOP per image; matmul peak {peak:.0f} GFLOP/s ({dtype}; start {peaks[0]:.0f}, "
          f"end {peaks[1]:.0f}); median of {args.rounds} rounds of {args.steps} steps")
    for lever, ts in times.items():
        speed = args.steps * base.batch_size / statistics.median(ts)
        gflops = speed * flops / 1e9
        lo, hi = paired_ratio_ci(ts, times[ref])
        print(f"{lever:>22}: {speed:6.0f} img/s  {gflops:6.1f} GFLOP/s  {100 * gflops / peak:3.0f}% of peak  "
              f"x{paired_ratio(ts, times[ref]):.3f} {ref} (90% CI {lo:.3f}-{hi:.3f})")


if __name__ == "__main__":
    main()
