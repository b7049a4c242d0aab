#!/usr/bin/env bash
# The Deep Compression figures of BENCHMARKS.md: train each network on Fashion-MNIST, compress it
# with its tuned defaults (cnnzoo/training/recipes/compress/defaults.toml), and print the reports
# (the paper's Tables 2-5 layout).
# Usage (repo root):  bash benchmarks/compress.sh [OUT_DIR]
# Environment: MODELS (default "lenet5 lenet5_caffe lenet_300_100"; "alexnet_cifar" is the larger network, about
# 1 h of training and 30 min of compression on the 2-core CPU; "vgg11_cifar", 8 + 8 minutes), CNNZOO (the command, default
# "python -m cnnzoo"), SKIP_TRAIN=1 reuses OUT_DIR's runs.
# Each model leaves OUT_DIR/<model>-run (the run), <model>.cnnz, <model>.report.{json,md}.
set -euo pipefail
OUT=${1:-/tmp/cnnzoo-compress}; mkdir -p "$OUT"
PY=${PYTHON:-python}
CNNZOO=${CNNZOO:-"$PY -m cnnzoo"}
MODELS=${MODELS:-"lenet5 lenet5_caffe lenet_300_100"}
for model in $MODELS; do
  run="$OUT/$model-run"
  case $model in
    lenet5)        train=(--recipe default); squeeze=() ;;
    lenet5_caffe)  train=(--recipe default); squeeze=() ;;  # the paper's "LeNet-5" (Caffe's, 431k weights)
    lenet_300_100) train=(--recipe default --epochs 10); squeeze=() ;;
    # the fast recipe's optimiser and augmentation, 8 epochs; retraining on a 15,000-image subset
    alexnet_cifar) train=(--recipe fast --epochs 8); squeeze=(--train-subset 15000 --prune-iters 3 --prune-epochs 1) ;;
    # the CPU league's VGG-11 at half width: its command in docs/league.json, less --model and --out;
    # retraining on 30,000 images
    vgg11_cifar)   read -ra train <<< "$($PY -c 'import json, shlex, sys
words = shlex.split(next(e["command"] for e in json.load(open("docs/league.json")) if e["model"] == sys.argv[1]))
i = words.index("--out"); print(shlex.join(words[4:i] + words[i + 2:]))' "$model")"
                   squeeze=(--train-subset 30000 --prune-iters 3 --prune-epochs 1) ;;
    *) echo "no training settings for $model (lenet5, lenet5_caffe, lenet_300_100, alexnet_cifar, vgg11_cifar)" >&2; exit 2 ;;
  esac
  if [[ -z "${SKIP_TRAIN:-}" || ! -f "$run/best.safetensors" ]]; then
    $CNNZOO train --model "$model" "${train[@]}" --out "$run" --no-progress
  fi
  start=$(date +%s)
  $CNNZOO compress --checkpoint "$run" --out "$OUT/$model.cnnz" "${squeeze[@]}" --no-progress > "$OUT/$model.compress.txt"
  echo "$model: compressed in $(( $(date +%s) - start )) s"
  cat "$OUT/$model.report.md"
  $CNNZOO eval --checkpoint "$OUT/$model.cnnz"
done
