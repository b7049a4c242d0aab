"""Peak memory of one training step with and without gradient checkpointing, on the CPU.

    .venv/bin/python benchmarks/grad_checkpointing_memory.py [--model resnet50] [--batch 16] [--size 224]

Each variant runs in a fresh subprocess, so that the peak resident set size (ru_maxrss) is that
step's alone; the model's weights and gradients are in both figures. Also checks that the two
steps give the same gradients.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one_step(model_name: str, batch: int, size: int, checkpointing: bool) -> dict:
    import torch

    import cnnzoo

    torch.manual_seed(0)
    model = cnnzoo.create_model(model_name).train()
    model.set_grad_checkpointing(checkpointing)
    x = torch.randn(batch, 3, size, size)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    model(x).logsumexp(1).mean().backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grad_norm = sum(float(p.grad.double().square().sum()) for p in model.parameters()) ** 0.5
    return dict(checkpointing=checkpointing, peak_mib=peak / 1024, step_mib=(peak - before) / 1024,
                seconds=seconds, grad_norm=grad_norm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_step(args.model, args.batch, args.size, args.child == "on")))
        return
    rows = []
    for flag in ("off", "on"):
        out = subprocess.run([sys.executable, __file__, "--model", args.model, "--batch", str(args.batch),
                              "--size", str(args.size), "--child", flag], check=True, capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in rows:
        print(f"{args.model} batch {args.batch} {args.size}x{args.size} checkpointing={r['checkpointing']!s:5}: "
              f"peak RSS {r['peak_mib']:7.0f} MiB (step adds {r['step_mib']:6.0f} MiB), {r['seconds']:.1f} s, "
              f"grad norm {r['grad_norm']:.6f}")
    off, on = rows
    print(f"step memory with checkpointing: {on['step_mib'] / off['step_mib']:.2f}x; "
          f"time {on['seconds'] / off['seconds']:.2f}x; "
          f"gradient norms differ by {abs(on['grad_norm'] - off['grad_norm']) / off['grad_norm']:.1e} (relative)")


if __name__ == "__main__":
    main()
