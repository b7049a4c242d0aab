"""Kill a deterministic training run with SIGKILL at random instants, resume it each time, and
check that it ends bit-identical to a run never interrupted, with every file readable after
every kill.

    python benchmarks/kill_resume.py [--kills 10] [--seed 0] [--out /tmp/kill-resume]

Each kill lands at a uniformly random wall-clock time within one uninterrupted run's duration
(start-up included), so some land in start-up, most mid-epoch, some inside a checkpoint write.
Prints one line per kill (where the last checkpoint stood) and a verdict; exit status 1 if any
check failed. Uses Fashion-MNIST from its default folder unless --dataset synthetic.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNNER = r'''
import json, sys
import cnnzoo.training.loop as T
if sys.argv[1] == "resume":
    T.resume_training(sys.argv[2], progress=False)
else:
    T.train(T.TrainConfig.from_dict(json.loads(sys.argv[1])), progress=False)
'''
TIME_COLUMNS = ("epoch_seconds", "images_per_second")


def child(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", RUNNER, *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def readable(run: Path) -> list[str]:
    """Names of files in ``run`` that do not load (should be none)."""
    from safetensors.torch import load_file

    from cnnzoo.training.checkpoint import load_train_state

    bad = []
    for f in run.iterdir():
        try:
            if f.suffix == ".safetensors":
                load_file(f)
            elif f.name == "train_state.pt":
                load_train_state(f)
            elif f.suffix == ".json":
                json.loads(f.read_text())
        except Exception as exc:  # any failure to load is what this benchmark looks for
            bad.append(f"{f.name}: {exc}")
    return bad


def metrics(run: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in TIME_COLUMNS} for r in csv.DictReader(open(run / "metrics.csv"))]


def differences(reference: Path, run: Path) -> list[str]:
    """How a finished ``run`` differs from the uninterrupted one (nothing, if resume is exact)."""
    import torch
    from safetensors.torch import load_file

    a, b = load_file(reference / "last.safetensors"), load_file(run / "last.safetensors")
    out = []
    if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
        out.append("final weights differ from the uninterrupted run")
    if metrics(reference) != metrics(run):
        out.append("metrics.csv differs from the uninterrupted run (wall-clock columns excluded)")
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--out", default="/tmp/kill-resume")
    p.add_argument("--train-subset", type=int, default=12800)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--model", default="lenet5")
    p.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default folder) or synthetic")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cfg = dict(model=args.model, dataset=args.dataset, device=args.device, epochs=args.epochs, batch_size=128,
               train_subset=args.train_subset, crop_padding=2, flip=True, seed=1, threads=1, deterministic=True,
               checkpoint_every=args.checkpoint_every)

    t0 = time.perf_counter()
    ref = child([json.dumps({**cfg, "out": str(out / "reference")})])
    if ref.wait() != 0:
        print(ref.stderr.read(), file=sys.stderr)
        return 1
    duration = time.perf_counter() - t0
    print(f"uninterrupted run: {duration:.1f} s wall (start-up included); kills at uniform random times in [0, {duration:.1f}] s")

    rng = random.Random(args.seed)
    run = out / "killed"
    failures: list[str] = []
    kills = chains = 0
    started = False
    while kills < args.kills:
        proc = child(["resume", str(run)] if started else [json.dumps({**cfg, "out": str(run)})])
        delay = rng.uniform(0, duration)
        try:
            proc.wait(timeout=delay)
            finished = True
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            finished = False
        if finished:  # the run ended before the kill time: start again from scratch for more kills
            if proc.returncode != 0:
                failures.append(f"run exited {proc.returncode}: {proc.stderr.read()[-500:]}")
                break
            chains += 1
            failures += differences(out / "reference", run)
            print(f"  run finished before the kill at {delay:.2f} s: compared with the reference "
                  f"({'identical' if not failures else 'DIFFERENT'}); starting a fresh run for the next kills")
            shutil.rmtree(run)
            started = False
            continue
        kills += 1
        bad = readable(run) if run.exists() else []
        failures += bad
        where = "no checkpoint yet"
        if (run / "train_state.pt").exists():
            from cnnzoo.training.checkpoint import load_train_state

            s = load_train_state(run / "train_state.pt")
            where = f"checkpoint at epoch {s['epoch']} step {s['step']}"
        tmp = len(list(run.glob(".*.tmp"))) if run.exists() else 0
        print(f"kill {kills:2d} at {delay:5.2f} s: {where}; unreadable files: {len(bad)}; half-written temp files: {tmp}")
        started = (run / "train_state.pt").exists()
        if not started:
            shutil.rmtree(run, ignore_errors=True)  # killed before the first checkpoint: start afresh
    if not failures:
        proc = child(["resume", str(run)] if started else [json.dumps({**cfg, "out": str(run)})])
        if proc.wait() != 0:
            failures.append(f"final resume exited {proc.returncode}: {proc.stderr.read()[-500:]}")
    if not failures:
        chains += 1
        failures += differences(out / "reference", run)
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print(f"PASS: {kills} SIGKILLs over {chains} kill-and-resume runs, every file readable after each kill; each run's "
          f"final weights bit-identical and metrics.csv identical (wall-clock columns excluded) to the uninterrupted run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
