"""Peak memory of training from an image folder: the whole process tree (trainer + loader workers).

Runs ``cnnzoo train --model mobilenet_v1 --input-size 3 224 224 --data-loader stream --workers 2``
on a folder of photo-like JPEGs (generated if missing, see photo_folder.py) and samples every
process of the tree from /proc four times a second: the peak of the summed RSS (shared pages
counted once per process, so an upper bound) and of the summed PSS (shared pages split between the
processes that share them: the memory the tree really takes).

With ``--steps K`` the run is stopped by SIGTERM after the checkpoint at step K (the trainer stops
cleanly after a step), for a machine too slow for a whole epoch; without it, one whole epoch and
its evaluation.

    python benchmarks/stream_memory.py /tmp/photos10k --generate 10000 --steps 100
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from photo_folder import make_photo_folder  # noqa: E402


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB; (0, 0) once it has gone."""
    try:
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
        pss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                   if line.startswith("Pss:"))
    except (OSError, StopIteration):
        return 0, 0
    return rss, pss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="image folder (root/train/<class>/*.jpg, root/val/...); generated if missing")
    p.add_argument("--generate", type=int, default=10000, help="training images to generate when root has none")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps; 0: one whole epoch")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--loader", default="stream", choices=("stream", "memory", "auto"))
    p.add_argument("--eval-batch-size", type=int, help="default: the trainer's (the training batch size)")
    p.add_argument("--trace", help="write the timeline here: seconds, then each process's PSS in MiB")
    args = p.parse_args()
    root = Path(args.root)
    if not (root / "train").is_dir():
        make_photo_folder(root, args.generate, max(1, args.generate // 20))
    out = Path(tempfile.mkdtemp(prefix="stream-memory-")) / "run"
    cmd = [sys.executable, "-m", "cnnzoo", "train", "--model", "mobilenet_v1", "--dataset", "imagefolder",
           "--data-dir", str(root), "--input-size", "3", "224", "224", "--data-loader", args.loader,
           "--workers", str(args.workers), "--epochs", "1", "--batch-size", str(args.batch_size),
           "--out", str(out), "--no-progress", "--json"]
    if args.eval_batch_size:
        cmd += ["--eval-batch-size", str(args.eval_batch_size)]
    if args.steps:
        cmd += ["--checkpoint-every", str(args.steps)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak_rss = peak_pss = peak_procs = 0
    stopped_at = None
    timeline = []
    while proc.poll() is None:
        pids = tree(proc.pid)
        usage = [memory_kib(pid) for pid in pids]
        timeline.append((time.perf_counter() - start, [u[1] // 1024 for u in usage]))
        peak_rss = max(peak_rss, sum(u[0] for u in usage))
        peak_pss = max(peak_pss, sum(u[1] for u in usage))
        peak_procs = max(peak_procs, len(pids))
        if args.steps and stopped_at is None and (out / "train_state.pt").exists():
            stopped_at = time.perf_counter() - start
            proc.send_signal(signal.SIGTERM)
        time.sleep(0.25)
    stdout = proc.stdout.read()
    if args.trace:
        Path(args.trace).write_text("".join(f"{t:.2f} " + " ".join(map(str, pss)) + "\n" for t, pss in timeline))
    result = dict(images=sum(1 for _ in (root / "train").rglob("*.jpg")), loader=args.loader, workers=args.workers,
                  batch_size=args.batch_size, steps=args.steps or "epoch", exit_code=proc.returncode,
                  peak_rss_gib=round(peak_rss / 2**20, 3), peak_pss_gib=round(peak_pss / 2**20, 3),
                  processes=peak_procs, seconds=round(time.perf_counter() - start, 1), run=str(out))
    if not args.steps and stdout.strip():
        summary = json.loads(stdout.strip().splitlines()[-1])
        result.update(test_top1=summary["test_top1"], train_seconds=summary["train_seconds"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
