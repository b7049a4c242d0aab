#!/usr/bin/env bash
# The Deep Compression figures of BENCHMARKS.md: train LeNet-5 and LeNet-300-100 on Fashion-MNIST,
# compress each with its tuned defaults, and print the reports (paper's Tables 2-3 layout).
# Usage (repo root):  bash benchmarks/compress_lenet.sh [OUT_DIR]
# Environment: CNNZOO (the command, default "python -m cnnzoo"); SKIP_TRAIN=1 reuses OUT_DIR's runs.
# Each model leaves OUT_DIR/<model>-run (the run), <model>.cnnz, <model>.report.{json,md}.
set -euo pipefail
OUT=${1:-/tmp/cnnzoo-compress}; mkdir -p "$OUT"
PY=${PYTHON:-python}
CNNZOO=${CNNZOO:-"$PY -m cnnzoo"}
for model in lenet5 lenet_300_100; do
  run="$OUT/$model-run"
  if [[ -z "${SKIP_TRAIN:-}" || ! -f "$run/best.safetensors" ]]; then
    epochs=12; [[ $model == lenet_300_100 ]] && epochs=10
    $CNNZOO train --model "$model" --epochs "$epochs" --out "$run" --no-progress
  fi
  start=$(date +%s)
  $CNNZOO compress --checkpoint "$run" --out "$OUT/$model.cnnz" --no-progress > "$OUT/$model.compress.txt"
  echo "$model: compressed in $(( $(date +%s) - start )) s"
  cat "$OUT/$model.report.md"
  $CNNZOO eval --checkpoint "$OUT/$model.cnnz" || echo "(eval of .cnnz needs the cli.py hook)"
done
