#!/usr/bin/env bash
# Screens variants of a recipe over several seeds at once on one GPU: every (variant, seed) run in
# parallel, one CPU thread each (a network this small leaves the GPU mostly idle, so 15 runs of
# vgg_airbench share an H200 at about 11,000 img/s each). Prints each run's test top-1, then each
# variant's mean and spread. Variants are `cnnzoo train` arguments, one per line of $VARIANTS.
# Usage (repo root, Fashion-MNIST's four .gz files in $CNNZOO_FASHION_MNIST):
#   OUT=runs/screen bash benchmarks/recipe_screen_gpu.sh [RECIPE]
set -uo pipefail
RECIPE=${1:-fast-long}
PY=${PYTHON:-python3}
OUT=${OUT:-runs/screen}
SEEDS=${SEEDS:-"0 1 2 3 4"}
VARIANTS=${VARIANTS:-"--cutout-off-epochs 0 --tta-shift 1
--cutout-off-epochs 8 --tta-shift 1
--cutout-off-epochs 15 --tta-shift 1"}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"; rm -f "$OUT/variants.txt"
n=0
while IFS= read -r variant; do
  for seed in $SEEDS; do
    read -ra args <<< "$variant"
    $PY -m cnnzoo train --recipe "$RECIPE" "${args[@]}" --seed "$seed" --device "$DEVICE" --threads 1 --no-progress \
      --data-dir "${CNNZOO_FASHION_MNIST:?set CNNZOO_FASHION_MNIST}" --out "$OUT/v$n-seed$seed" >"$OUT/v$n-seed$seed.log" 2>&1 &
  done
  echo "v$n: $variant" >>"$OUT/variants.txt"
  n=$((n + 1))
done <<< "$VARIANTS"
wait
$PY - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path

out = Path(sys.argv[1])
for line in (out / "variants.txt").read_text().splitlines():
    name, variant = line.split(": ", 1)
    top1 = [json.loads(p.read_text())["test_top1"] for p in sorted(out.glob(f"{name}-seed*/summary.json"))]
    if top1:
        sd = statistics.stdev(top1) if len(top1) > 1 else 0.0
        print(f"{variant}: {' '.join(f'{t:.4f}' for t in top1)}; mean {statistics.mean(top1):.4f} (sd {sd:.4f})")
PY
