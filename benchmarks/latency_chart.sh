#!/usr/bin/env bash
# "Operations are not time": top-1 against measured milliseconds per image instead of GMACs.
#   PYTHON=.venv/bin/python bash benchmarks/latency_chart.sh RUN_DIR [RUN_DIR ...]
# Times the zoo's ImageNet networks (the published panel) and the runs' models (our panel) at
# batch 1 with `cnnzoo bench --backend onnxruntime --precision fp32` (batch norm folded, ONNX
# Runtime: the network as deployed), then draws docs/compare_latency.png with
# `cnnzoo compare --x latency`. The runs' models are timed at their registered input size.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/latency}
ITERS=${ITERS:-3}
mkdir -p "$OUT"
ours=$("$PY" -c 'import json, sys; print(" ".join(sorted({json.load(open(f"{d}/summary.json"))["model"] for d in sys.argv[1:]})))' "$@")
"$PY" -m cnnzoo bench alexnet googlenet resnet18 resnet50 mobilenet_v1 mobilenet_v2 --batch-size 1 \
    --iters "$ITERS" --warmup 1 --backend onnxruntime --precision fp32 --json > "$OUT/bench_imagenet.json"
"$PY" -m cnnzoo bench $ours --batch-size 1 --iters 12 --warmup 2 --backend onnxruntime --precision fp32 int8 \
    --json > "$OUT/bench_ours.json"
"$PY" -m cnnzoo compare "$@" --x latency "$OUT/bench_imagenet.json" "$OUT/bench_ours.json" \
    --latency-variant onnxruntime-fp32 --out docs/compare_latency.png
