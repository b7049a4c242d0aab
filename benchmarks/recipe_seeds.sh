#!/usr/bin/env bash
# A recipe's figures of BENCHMARKS.md over five seeds: `cnnzoo train --recipe RECIPE --seed S` for
# each seed, then each seed's test top-1 and training seconds, their mean, spread and minimum.
#   bash benchmarks/recipe_seeds.sh [RECIPE] [OUT_DIR]        (RECIPE default: fast)
# A seed whose summary.json is in OUT_DIR is not run again; an interrupted one (SIGTERM writes its
# checkpoint) is continued with `cnnzoo train --resume`. Run nothing else meanwhile: the
# training seconds are the figure. Environment: SEEDS (default "0 1 2 3 4"), THREADS (default 2),
# TRAIN_ARGS (extra `cnnzoo train` arguments, e.g. "--epochs 16"), CNNZOO (default "python -m cnnzoo").
set -euo pipefail
RECIPE=${1:-fast}
OUT=${2:-runs/recipe-$RECIPE}; mkdir -p "$OUT"
PY=${PYTHON:-python}
CNNZOO=${CNNZOO:-"$PY -m cnnzoo"}
SEEDS=${SEEDS:-"0 1 2 3 4"}
THREADS=${THREADS:-2}
read -ra EXTRA <<< "${TRAIN_ARGS:-}"
for seed in $SEEDS; do
  [[ -f "$OUT/seed$seed/summary.json" ]] && continue
  if [[ -f "$OUT/seed$seed/config.json" ]]; then
    args=(--resume "$OUT/seed$seed")
  else
    args=(--recipe "$RECIPE" "${EXTRA[@]}" --seed "$seed" --threads "$THREADS" --out "$OUT/seed$seed")
  fi
  echo "\$ cnnzoo train ${args[*]}" >&2
  $CNNZOO train "${args[@]}" --no-progress > /dev/null
done

$PY - "$OUT" $SEEDS <<'PY'
import json, statistics, sys
from pathlib import Path

out, seeds = Path(sys.argv[1]), sys.argv[2:]
runs = [json.loads((out / f"seed{s}" / "summary.json").read_text()) for s in seeds]
print("| seed | test top-1 | train s |\n|---|---:|---:|")
for s, r in zip(seeds, runs):
    print(f"| {s} | {r['test_top1']:.4f} | {r['train_seconds']:.1f} |")
top1, secs = [r["test_top1"] for r in runs], [r["train_seconds"] for r in runs]
sd = statistics.stdev(top1) if len(top1) > 1 else 0.0
print(f"| **mean** | {statistics.mean(top1):.4f} (sd {sd:.4f}, min {min(top1):.4f}) | "
      f"{statistics.mean(secs):.1f} (max {max(secs):.1f}) |")
PY
