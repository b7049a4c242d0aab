#!/usr/bin/env bash
# MobileNet v1 and v2 (_cifar) trained to convergence on one GPU: the fast recipe with Cutout, for
# more epochs than the league's 1.6-minute budget gives (the GPU tier's members). The runs share the
# GPU in parallel: one network this small alone leaves the GPU mostly idle.
# Usage (repo root, Fashion-MNIST's four .gz files in $CNNZOO_FASHION_MNIST):
#   OUT=runs/mobilenet-gpu bash benchmarks/mobilenet_gpu.sh
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-runs/mobilenet-gpu}
RUNS=${RUNS:-runs/mobilenet-gpu}
mkdir -p "$OUT" "$RUNS"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
run() {  # name, then train flags
  local name=$1; shift
  ${TIMEOUT:+timeout $TIMEOUT} $PY -m cnnzoo train --recipe fast --seed 0 --device cuda --threads 4 \
    --data-dir "${CNNZOO_FASHION_MNIST:?set CNNZOO_FASHION_MNIST}" --no-progress --out "$RUNS/$name" "$@" \
    >"$OUT/$name.log" 2>&1
  cp "$RUNS/$name/summary.json" "$OUT/$name.json" 2>/dev/null
}
run v1_28 --model mobilenet_v1_cifar --epochs 40 --cutout 8 &
run v1_56 --model mobilenet_v1_cifar --epochs 24 --input-size 1 56 56 --crop-padding 4 --cutout 16 &
run v2_28 --model mobilenet_v2_cifar --epochs 30 --cutout 8 &
wait
grep -h '"test_top1"\|"train_seconds"' "$OUT"/*.json
