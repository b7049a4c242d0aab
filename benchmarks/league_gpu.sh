#!/usr/bin/env bash
# The GPU tier of the league: the _cifar variants that the Fashion-MNIST benchmark table has figures
# for (AlexNet 0.899, VGG16 0.935, GoogLeNet 0.937, ResNet18 0.949, MobileNet 0.950), each trained
# with the fast recipe for the epochs that fit 1.6 minutes on one GPU, the MobileNets with Cutout
# for their own epochs (league.TIERS; under 4 minutes each). Rerunning continues where it
# stopped (a finished entry is skipped, an interrupted one resumed), so a short GPU loan is enough.
# Usage (repo root, Fashion-MNIST's four .gz files in $CNNZOO_FASHION_MNIST):
#   OUT=runs/league-gpu bash benchmarks/league_gpu.sh [extra cnnzoo league arguments]
set -euo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-runs/league-gpu}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
echo "\$ cnnzoo league --tier gpu --out $OUT $*" >&2
$PY -m cnnzoo league --tier gpu --data-dir "${CNNZOO_FASHION_MNIST:?set CNNZOO_FASHION_MNIST to the folder of the four .gz files}" \
  --out "$OUT" --no-progress "$@"
