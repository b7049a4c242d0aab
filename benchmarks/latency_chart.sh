#!/usr/bin/env bash
# "Operations are not time": top-1 against measured milliseconds per image instead of GMACs.
#   PYTHON=.venv/bin/python bash benchmarks/latency_chart.sh RUN_DIR [RUN_DIR ...]
# Times the zoo's ImageNet networks (the published panel) and the runs' models (our panel) at
# batch 1 with `cnnzoo bench` (torch eager fp32, the "ours" variant), then draws
# docs/compare_latency.png with `cnnzoo compare --x latency`. The runs' models are timed at their
# registered input size.
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-runs/latency}
ITERS=${ITERS:-5}
mkdir -p "$OUT"
ours=$("$PY" -c 'import json, sys; print(" ".join(sorted({json.load(open(f"{d}/summary.json"))["model"] for d in sys.argv[1:]})))' "$@")
"$PY" -m cnnzoo bench alexnet vgg16 googlenet inception_v3 resnet18 resnet50 resnext50_32x4d mobilenet_v1 \
    mobilenet_v1_050 mobilenet_v2 --batch-size 1 --iters "$ITERS" --warmup 2 --json > "$OUT/bench_imagenet.json"
"$PY" -m cnnzoo bench $ours --batch-size 1 --iters $((ITERS * 4)) --warmup 2 --json > "$OUT/bench_ours.json"
"$PY" -m cnnzoo compare "$@" --x latency "$OUT/bench_imagenet.json" "$OUT/bench_ours.json" --out docs/compare_latency.png
