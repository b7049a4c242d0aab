#!/usr/bin/env bash
# The five-seed compression figures of BENCHMARKS.md, in one of two ways:
# - one trained run compressed with the model's defaults at several compression seeds:
#     bash benchmarks/compress_seeds.sh RUN [OUT_DIR]          (RUN: a run folder)
# - the README's two commands as a user runs them, once per training seed: train MODEL with
#   --seed S (TRAIN_ARGS, default "--recipe default": 12 epochs), then compress that run with the defaults:
#     TRAIN_MODEL=lenet5_caffe bash benchmarks/compress_seeds.sh - [OUT_DIR]
# Then the mean and standard deviation of the ratio and of the points lost. A seed whose report is
# already in OUT_DIR is not run again, so two invocations with different SEEDS can share the cores.
# Environment: SEEDS (default "0 1 2 3 4"), THREADS (default 1: the thread count changes the
# rounding, so 1- and 2-thread runs of one seed differ), CNNZOO (default "python -m cnnzoo").
# Extra `cnnzoo compress` arguments go in COMPRESS_ARGS, e.g. COMPRESS_ARGS="--sparsity c5=0.96".
set -euo pipefail
RUN=${1:?usage: bash benchmarks/compress_seeds.sh RUN|- [OUT_DIR]}
OUT=${2:-/tmp/cnnzoo-compress-seeds}; mkdir -p "$OUT"
PY=${PYTHON:-python}
CNNZOO=${CNNZOO:-"$PY -m cnnzoo"}
SEEDS=${SEEDS:-"0 1 2 3 4"}
THREADS=${THREADS:-1}
read -ra EXTRA <<< "${COMPRESS_ARGS:-}"
read -ra TRAIN <<< "${TRAIN_ARGS:---recipe default}"
for seed in $SEEDS; do
  if [[ -n "${TRAIN_MODEL:-}" ]]; then
    run="$OUT/run-seed$seed"; compress_seed=()
    if [[ ! -f "$run/summary.json" ]]; then
      echo "\$ cnnzoo train --model $TRAIN_MODEL ${TRAIN[*]} --threads $THREADS --seed $seed --out $run" >&2
      $CNNZOO train --model "$TRAIN_MODEL" "${TRAIN[@]}" --threads "$THREADS" --seed "$seed" --out "$run" --no-progress > /dev/null
    fi
  else
    run="$RUN"; compress_seed=(--seed "$seed")
  fi
  [[ -f "$OUT/seed$seed.report.json" ]] && continue
  echo "\$ cnnzoo compress --checkpoint $run --out $OUT/seed$seed.cnnz --threads $THREADS ${compress_seed[*]} ${EXTRA[*]}" >&2
  $CNNZOO compress --checkpoint "$run" --out "$OUT/seed$seed.cnnz" --threads "$THREADS" "${compress_seed[@]}" \
    "${EXTRA[@]}" --no-progress > /dev/null
done

$PY - "$OUT" $SEEDS <<'PY'
import json, statistics, sys
from pathlib import Path

out, seeds = Path(sys.argv[1]), sys.argv[2:]
reports = [json.loads((out / f"seed{s}.report.json").read_text()) for s in seeds]
rows = [r["totals"] for r in reports]
print("| seed | ratio | top-1 before | pruned | quantized | loss (points) |\n|---|---:|---:|---:|---:|---:|")
for s, t in zip(seeds, rows):
    print(f"| {s} | {t['ratio']:.1f}x | {t['top1_before']:.4f} | {t['top1_pruned']:.4f} | "
          f"{t['top1_quantized']:.4f} | {t['top1_loss_points']:.2f} |")
losses = [t["top1_loss_points"] for t in rows]
sd = statistics.stdev(losses) if len(losses) > 1 else 0.0
mean = lambda key: statistics.mean(t[key] for t in rows)
print(f"| **mean** | {mean('ratio'):.1f}x | | | | {mean('top1_loss_points'):.2f} (sd {sd:.2f}, max {max(losses):.2f}) |")

# Per stage, as Han et al.'s Table 1: the size after each stage (conv/fc weights in that stage's
# format, the rest as the file stores it) and the test top-1 after it; Huffman coding is lossless.
def ratio(key):
    return statistics.mean(r["totals"]["fp32_bytes"] / (sum(l[key] for l in r["layers"]) + r["totals"]["dense_bytes"])
                           for r in reports)
print("\n| stage | ratio (mean) | test top-1 (mean) |\n|---|---:|---:|")
print(f"| before | 1x | {mean('top1_before'):.4f} |")
print(f"| pruning + retraining | {ratio('pruned_bytes'):.1f}x | {mean('top1_pruned'):.4f} |")
print(f"| + quantization, centroids fine-tuned | {ratio('quantized_bytes'):.1f}x | {mean('top1_quantized'):.4f} |")
print(f"| + Huffman coding (the file) | {mean('ratio'):.1f}x | {mean('top1_quantized'):.4f} |")
PY
