#!/usr/bin/env bash
# GPU checks for the device machine: CUDA training with AMP and channels_last, MAC counting on CUDA.
# Usage (from the repo root, Fashion-MNIST's four .gz files in $CNNZOO_FASHION_MNIST):
#   OUT=/tmp/gpu bash benchmarks/gpu_check.sh
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-check}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__)" | tee -a "$OUT/gpu.txt"
python3 - <<'PY' | tee -a "$OUT/gpu.txt"
import torch, cnnzoo
from cnnzoo.analysis import count_macs
m = cnnzoo.create_model("resnet50").cuda()
print("resnet50 GMACs counted on cuda:", count_macs(m, (3, 224, 224)) / 1e9)
PY
run() {  # name, then train flags
  local name=$1; shift
  rm -rf "/tmp/run-$name"
  python3 -m cnnzoo train --model "$name" --device cuda --no-progress --json --out "/tmp/run-$name" "$@" \
    2>&1 | tail -n 2 | tee -a "$OUT/train.txt"
  cp "/tmp/run-$name/metrics.csv" "$OUT/metrics-$name.csv"
}
run lenet5 --recipe default
run resnet18_cifar --recipe default --amp --epochs 6 --crop-padding 2 --flip --batch-size 256 --lr 0.004
run mobilenet_v2_cifar --recipe default --amp --epochs 6 --crop-padding 2 --flip --batch-size 256 --lr 0.004
run googlenet_cifar --recipe default --amp --epochs 6 --crop-padding 2 --flip --batch-size 256 --lr 0.004
