#!/usr/bin/env bash
# The GPU tier's MobileNets (league.TIERS: the fast recipe with Cutout, for more epochs than the
# 1.6-minute budget gives; v1 at 56x56), each in its own league folder, and v1 at its native 28x28
# for comparison. The runs share the GPU in parallel: one network this small leaves it mostly idle.
# Usage (repo root, Fashion-MNIST's four .gz files in $CNNZOO_FASHION_MNIST):
#   OUT=runs/mobilenet-gpu bash benchmarks/mobilenet_gpu.sh [extra arguments for every run]
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-runs/mobilenet-gpu}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
[[ $DEVICE == cuda* ]] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
common=(--device "$DEVICE" --threads 4 --data-dir "${CNNZOO_FASHION_MNIST:?set CNNZOO_FASHION_MNIST}" --no-progress)
for model in mobilenet_v1_cifar mobilenet_v2_cifar; do
  $PY -m cnnzoo league --tier gpu --models "$model" "${common[@]}" --out "$OUT/$model" "$@" >"$OUT/$model.log" 2>&1 &
done
$PY -m cnnzoo train --recipe fast --model mobilenet_v1_cifar --epochs 40 --cutout 8 --seed 0 "${common[@]}" \
  --out "$OUT/mobilenet_v1_cifar-28" "$@" >"$OUT/mobilenet_v1_cifar-28.log" 2>&1 &
wait
for run in "$OUT"/mobilenet_v1_cifar/mobilenet_v1_cifar "$OUT"/mobilenet_v2_cifar/mobilenet_v2_cifar "$OUT"/mobilenet_v1_cifar-28; do
  $PY -c "import json, sys; s = json.load(open(sys.argv[1] + '/summary.json')); print(sys.argv[1], s['input_size'], s['epochs'], s['test_top1'], s['train_seconds'])" "$run"
done
