#!/usr/bin/env bash
# `cnnzoo bench` on a CUDA GPU, for BENCHMARKS.md's GPU section: speed.sh's three parts (ours against
# torchvision/timm in inference and training, the inference fast path at batch 1 and 32, the _cifar
# variants' training throughput) with bf16 autocast and channels_last, the fast path again in fp32,
# and torch.compile for resnet50. Every step has its own time limit, so a slow one loses only itself.
# Usage (repo root): OUT=/tmp/gpu bash benchmarks/gpu_bench.sh   -> $OUT/gpu-bench.tgz, $OUT/*.md
# Environment: DEVICE (default cuda), ITERS (default 15), WARMUP (5), REF_BATCH (64), REF_MODELS.
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-bench}; mkdir -p "$OUT"
WORK=$(mktemp -d)  # speed.sh writes three files per part; they come back as one archive
export ITERS=${ITERS:-15} WARMUP=${WARMUP:-5} REF_BATCH=${REF_BATCH:-64}
export REF_MODELS=${REF_MODELS:-"alexnet vgg16 googlenet inception_v3 resnet50 seresnet50 mobilenet_v1 mobilenet_v2"}
DEVICE=${DEVICE:-cuda}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $PYTHON -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; nproc; } | tee "$OUT/machine.txt"

step() {  # name, seconds allowed, then the environment assignments for speed.sh
  local name=$1 limit=$2; shift 2
  echo "== $name" >&2
  env "$@" timeout "$limit" bash benchmarks/speed.sh "$WORK/$name" > "$OUT/$name.md" 2> "$WORK/$name.log"
  echo "== $name: exit $?" | tee -a "$OUT/machine.txt" >&2
  tar czf "$OUT/gpu-bench.tgz" -C "$WORK" .
}
step amp 300 DEVICE_FLAGS="--device $DEVICE --amp --channels-last" PARTS="reference fast cifar"
step fp32 60 DEVICE_FLAGS="--device $DEVICE --channels-last" PARTS=fast
# torch.compile warms up for tens of seconds per model: resnet50 alone, at batch 32
timeout 120 $PYTHON -m cnnzoo bench resnet50 --batch-size 32 --reference --optimized --compile \
  --device "$DEVICE" --amp --channels-last --iters "$ITERS" --warmup "$WARMUP" > "$OUT/compile.txt" 2>&1
echo "== compile: exit $?" | tee -a "$OUT/machine.txt" >&2
