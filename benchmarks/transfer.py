"""Transfer on real data: does a network pretrained on five Fashion-MNIST classes learn the other
five from 100 labelled images per class better than the same network from scratch?

    python benchmarks/transfer.py [--model resnet20] [--seeds 0 1] [--out runs/transfer]

1. Pretrain ``--model`` on classes 0-4 (T-shirt/top, Trouser, Pullover, Dress, Coat), all 30,000
   training images.
2. For each training budget (``--epochs``) and seed, on classes 5-9 (Sandal, Shirt, Sneaker, Bag,
   Ankle boot) with 100 training images per class (the seed draws them), the same steps, schedule
   and augmentation for each of: fine-tune (``--initial-checkpoint``: every layer trains, a fresh
   classifier), linear probe (``--freeze-backbone``: the classifier alone) and scratch (random
   initialisation).
Test top-1 is that of the final weights (``cnnzoo eval``) on all 5,000 test images of classes 5-9
(500 of them are scored after each epoch). Every run is a ``cnnzoo`` command, printed, then run;
the results go to OUT/transfer.json and a Markdown table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("fine-tune", "linear probe", "scratch")


def cnnzoo(argv: list[str], result: Path) -> dict:
    """Run ``cnnzoo ARGV`` (printed first) unless ``result`` exists (so that a stopped benchmark
    continues where it was), and return ``result``'s JSON."""
    print("$ cnnzoo " + shlex.join(argv), flush=True)
    if not result.is_file():
        done = subprocess.run([sys.executable, "-m", "cnnzoo", *argv], cwd=ROOT, check=True, stdout=subprocess.PIPE,
                              text=True)
        if result.suffix == ".jsonl":  # a command's --json line, kept
            result.write_text(done.stdout.strip().splitlines()[-1] + "\n")
    return json.loads(result.read_text())


def train_and_test(flags: list[str], out: Path) -> dict:
    """A ``cnnzoo train`` run, then ``cnnzoo eval`` of its final weights on the whole test split
    (the run itself scores a subset after each epoch, to keep evaluation a small share of it)."""
    summary = cnnzoo(["train", *flags, "--test-subset", "500", "--out", str(out), "--no-progress"], out / "summary.json")
    test = cnnzoo(["eval", "--checkpoint", str(out / "last.safetensors"), "--json"], out / "eval.jsonl")
    return {**summary, "test_top1": test["top1"], "test_images": test["images"]}


def arm_flags(arm: str, pretrained: Path, args: argparse.Namespace, epochs: int, seed: int) -> list[str]:
    common = ["--model", args.model, "--classes", "5,6,7,8,9", "--train-per-class", str(args.per_class),
              "--epochs", str(epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
              "--warmup-epochs", "1", "--crop-padding", "2", "--flip", "--seed", str(seed),
              "--threads", str(args.threads)]
    if arm == "scratch":
        return common
    return [*common, "--initial-checkpoint", str(pretrained), *(["--freeze-backbone"] if arm == "linear probe" else [])]


def table(results: dict) -> str:
    seeds = results["seeds"]
    lines = [f"| steps | start | {' | '.join(f'seed {s}' for s in seeds)} | mean |", "|---" * (len(seeds) + 3) + "|"]
    for budget in results["budgets"]:
        for arm in ARMS:
            top1 = budget["top1"][arm]
            lines.append(f"| {budget['steps']} | {arm} | {' | '.join(f'{t:.4f}' for t in top1)} | "
                         f"{statistics.mean(top1):.4f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--pretrain-epochs", type=int, default=3)
    p.add_argument("--per-class", type=int, default=100, help="labelled training images per new class")
    p.add_argument("--epochs", type=int, nargs="+", default=[2, 4, 8],
                   help="training budgets: epochs over the new classes' images")
    p.add_argument("--batch-size", type=int, default=25)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1, help="one thread: the 2-core machine is shared")
    p.add_argument("--out", type=Path, default=Path("runs/transfer"))
    args = p.parse_args()
    out = args.out.resolve()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # `cnnzoo eval` too (it has no --threads)
    start = time.perf_counter()

    pre = train_and_test(["--model", args.model, "--classes", "0,1,2,3,4", "--epochs", str(args.pretrain_epochs),
                          "--batch-size", "128", "--warmup-epochs", "0.2", "--crop-padding", "2", "--flip",
                          "--threads", str(args.threads)], out / "pretrain")
    budgets = []
    for epochs in args.epochs:
        top1: dict[str, list[float]] = {arm: [] for arm in ARMS}
        for seed in args.seeds:
            for arm in ARMS:
                run = out / f"{arm.replace(' ', '-')}-e{epochs}-s{seed}"
                summary = train_and_test(arm_flags(arm, out / "pretrain", args, epochs, seed), run)
                top1[arm].append(summary["test_top1"])
                print(f"{arm}, {epochs} epochs, seed {seed}: test top-1 {summary['test_top1']:.4f}", flush=True)
        steps = epochs * -(-5 * args.per_class // args.batch_size)
        gain = statistics.mean(top1["fine-tune"]) - statistics.mean(top1["scratch"])
        budgets.append(dict(epochs=epochs, steps=steps, top1=top1, mean_gain_fine_tune_over_scratch=gain))

    results = dict(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), torch=torch.__version__,
        machine=f"{platform.machine()}, {os.cpu_count()} cores (shared with other jobs)",
        command="python benchmarks/transfer.py " + shlex.join(sys.argv[1:]), model=args.model, seeds=args.seeds,
        pretrain_test_top1_classes_0_4=pre["test_top1"], pretrain_epochs=args.pretrain_epochs,
        per_class=args.per_class, batch_size=args.batch_size, lr=args.lr, test_images=summary["test_images"],
        budgets=budgets, minutes=round((time.perf_counter() - start) / 60, 1))
    (out / "transfer.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{args.model}, pretrained on classes 0-4 (test top-1 {pre['test_top1']:.4f}); classes 5-9 with "
          f"{args.per_class} images each; test top-1 on their {summary['test_images']:,} test images:\n")
    print(table(results))
    for b in budgets:
        print(f"{b['steps']} steps: fine-tune - scratch {b['mean_gain_fine_tune_over_scratch'] * 100:+.1f} points "
              f"(mean over seeds)")
    print(f"{results['minutes']} min; {out / 'transfer.json'}")


if __name__ == "__main__":
    main()
