#!/usr/bin/env bash
# Screens variants of a recipe over several seeds at once on one GPU: every (variant, seed) run of
# benchmarks/recipe_seeds.sh in parallel, one CPU thread each (a network this small leaves the GPU
# mostly idle: 15 runs of vgg_airbench share an H200 at about 11,000 img/s each), then each
# variant's table with its mean and spread. Variants are `cnnzoo train` arguments, one per line of
# $VARIANTS; variant n's runs are in OUT/vn.
# Usage (repo root, Fashion-MNIST's four .gz files in $CNNZOO_FASHION_MNIST):
#   OUT=runs/screen bash benchmarks/recipe_screen_gpu.sh [RECIPE]
set -uo pipefail
RECIPE=${1:-fast-long}
OUT=${OUT:-runs/screen}
SEEDS=${SEEDS:-"0 1 2 3 4"}
# default: how many of 45 epochs of vgg_airbench to leave without Cutout
VARIANTS=${VARIANTS:-"--model vgg_airbench --epochs 45 --cutout-off-epochs 0 --tta-shift 1
--model vgg_airbench --epochs 45 --cutout-off-epochs 8 --tta-shift 1
--model vgg_airbench --epochs 45 --cutout-off-epochs 15 --tta-shift 1"}
export PYTHON=${PYTHON:-python3} THREADS=1
device=(--device "${DEVICE:-cuda}" --data-dir "${CNNZOO_FASHION_MNIST:?set CNNZOO_FASHION_MNIST}")
seeds=($SEEDS)
mapfile -t variants <<< "$VARIANTS"
mkdir -p "$OUT"
for n in "${!variants[@]}"; do
  for seed in "${seeds[@]}"; do
    SEEDS=$seed TRAIN_ARGS="${variants[n]} ${device[*]}" bash benchmarks/recipe_seeds.sh "$RECIPE" "$OUT/v$n" \
      >/dev/null 2>"$OUT/v$n-seed$seed.log" &
  done
done
wait
for n in "${!variants[@]}"; do
  echo "v$n: ${variants[n]}"
  SEEDS="$SEEDS" bash benchmarks/recipe_seeds.sh "$RECIPE" "$OUT/v$n"
done
