"""Peak memory of training from an image folder: the whole process tree (trainer + loader workers).

Runs ``cnnzoo train --model mobilenet_v1 --input-size 3 224 224 --data-loader stream --workers 2``
on a folder of photo-like JPEGs (generated if missing, see photo_folder.py) and samples every
process of the tree from /proc four times a second: the peak of
- the summed RSS (a page shared by k processes counted k times: an upper bound),
- the summed PSS (a shared page split between the processes that share it, those outside the tree
  too: a lower bound while other torch processes share its libraries),
- the distinct memory (every physical page of the tree counted once, from /proc/PID/pagemap, run as
  root): what the tree takes on a machine of its own, the figure held against a budget, in GB.

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


PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def distinct_kib(pids: list[int]) -> int | None:
    """The tree's resident memory with every physical page counted once, in KiB: the pages of
    mappings no other process shares, plus the union (by page frame, from /proc/PID/pagemap) of
    those of mappings shared with anyone. Unlike summed PSS, pages shared with processes outside
    the tree count in full. None without the privilege to read page frames (root)."""
    private, frames = 0, set()
    for pid in pids:
        try:
            smaps = Path(f"/proc/{pid}/smaps").read_text().splitlines()
            with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
                vma, shared, rss = None, 0, 0
                for line in [*smaps, "0-0 end"]:
                    field = line.split()
                    if not line[0].isupper():  # a new mapping: account for the previous one
                        if vma and shared:
                            start, end = (int(a, 16) // (PAGE_KIB * 1024) for a in vma.split("-"))
                            pagemap.seek(start * 8)
                            entries = memoryview(pagemap.read((end - start) * 8)).cast("Q")
                            got = {e & (2**55 - 1) for e in entries if e >> 63}
                            if got == {0}:
                                return None
                            frames |= got
                        elif vma:
                            private += rss
                        vma, shared, rss = field[0], 0, 0
                    elif field[0] == "Rss:":
                        rss = int(field[1])
                    elif field[0] in ("Shared_Clean:", "Shared_Dirty:"):
                        shared += int(field[1])
        except (OSError, ValueError):
            continue  # the process has gone
    return private + len(frames) * PAGE_KIB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("root", help="image folder (root/train/<class>/*.jpg, root/val/...); generated if missing")
    p.add_argument("--generate", type=int, default=10000, help="training images to generate when root has none")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps; 0: one whole epoch")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--loader", default="stream", choices=("stream", "memory", "auto"))
    p.add_argument("--eval-batch-size", type=int, help="default: the trainer's (the training batch size)")
    p.add_argument("--trace", help="write the timeline here: seconds, the tree's distinct MiB (- when not read), "
                                   "then each process's PSS in MiB")
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
    peak_rss = peak_pss = peak_distinct = peak_procs = 0
    stopped_at = None
    timeline = []
    while proc.poll() is None:
        pids = tree(proc.pid)
        usage = [memory_kib(pid) for pid in pids]
        pss = sum(u[1] for u in usage)
        # page frames cost ~0.1 s per process: read them every 2 s and whenever PSS reaches a new peak
        distinct = distinct_kib(pids) if len(timeline) % 8 == 0 or pss > peak_pss else None
        timeline.append((time.perf_counter() - start, [u[1] // 1024 for u in usage], distinct))
        peak_rss = max(peak_rss, sum(u[0] for u in usage))
        peak_pss = max(peak_pss, pss)
        peak_distinct = max(peak_distinct, distinct or 0)
        peak_procs = max(peak_procs, len(pids))
        if args.steps and stopped_at is None and (out / "train_state.pt").exists():
            stopped_at = time.perf_counter() - start
            proc.send_signal(signal.SIGTERM)
        time.sleep(0.25)
    stdout = proc.stdout.read()
    if args.trace:
        Path(args.trace).write_text("".join(f"{t:.2f} {'-' if d is None else d // 1024} " + " ".join(map(str, pss)) + "\n"
                                            for t, pss, d in timeline))
    result = dict(images=sum(1 for _ in (root / "train").rglob("*.jpg")), loader=args.loader, workers=args.workers,
                  batch_size=args.batch_size, steps=args.steps or "epoch", exit_code=proc.returncode,
                  peak_rss_gib=round(peak_rss / 2**20, 3), peak_pss_gib=round(peak_pss / 2**20, 3),
                  peak_distinct_gb=round(peak_distinct * 1024 / 1e9, 3) if peak_distinct else None,
                  processes=peak_procs, seconds=round(time.perf_counter() - start, 1), run=str(out))
    if not args.steps and stdout.strip():
        summary = json.loads(stdout.strip().splitlines()[-1])
        result.update(test_top1=summary["test_top1"], train_seconds=summary["train_seconds"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
