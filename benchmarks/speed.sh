#!/usr/bin/env bash
# The speed figures of BENCHMARKS.md: every command below, then markdown tables built from their
# --json lines. Usage (repo root):
#   bash benchmarks/speed.sh [OUT_DIR]              # all parts (hours on a 2-core CPU)
#   PARTS="fast cifar" bash benchmarks/speed.sh     # a subset: reference fast cifar
#   PARTS=tables bash benchmarks/speed.sh OUT_DIR   # only the markdown of earlier results
# Environment: THREADS (default: all cores), ITERS (timed iterations, default 10), WARMUP (3),
# REF_MODELS (the reference part's models; default every model with a reference implementation),
# REF_BATCH (the reference part's batch size, default 8), DEVICE_FLAGS (added to every command, e.g.
# "--device cuda --amp --channels-last" for the GPU figures),
# CNNZOO (the command, default "python -m cnnzoo"). Each part writes OUT_DIR/<part>.json (the
# report) and OUT_DIR/<part>.txt (the human table); the markdown is printed at the end.
set -euo pipefail
OUT=${1:-/tmp/cnnzoo-speed}; mkdir -p "$OUT"
PY=${PYTHON:-python}
CNNZOO=${CNNZOO:-"$PY -m cnnzoo"}
THREADS=${THREADS:-$(nproc)}
ITERS=${ITERS:-10}
WARMUP=${WARMUP:-3}
PARTS=${PARTS:-"reference fast cifar"}
REF_BATCH=${REF_BATCH:-8}
read -ra DEVICE <<< "${DEVICE_FLAGS:-}"
COMMON=(--threads "$THREADS" --iters "$ITERS" --warmup "$WARMUP" "${DEVICE[@]}" --json)

bench() {  # part name, then bench arguments
  local part=$1; shift
  echo "\$ cnnzoo bench $* ${COMMON[*]}" | tee "$OUT/$part.cmd" >&2
  $CNNZOO bench "$@" "${COMMON[@]}" > "$OUT/$part.txt"
  tail -n 1 "$OUT/$part.txt" > "$OUT/$part.json"
}

for part in $PARTS; do
  case $part in
    reference)  # ours vs torchvision/timm, eager, infer and train, batch REF_BATCH
      if [[ -n ${REF_MODELS:-} ]]; then read -ra REF <<< "$REF_MODELS"; else
      mapfile -t REF < <($PY -c "from cnnzoo import list_models, get_model_cfg
print('\n'.join(n for n in list_models() if get_model_cfg(n)['reference']))"); fi
      bench reference "${REF[@]}" --mode both --batch-size "$REF_BATCH" --reference ;;
    fast)  # optimize_for_inference vs torchvision/timm eager, batch 1 and 32
      bench fast-b1 resnet50 mobilenet_v1 --batch-size 1 --reference --optimized
      bench fast-b32 resnet50 mobilenet_v1 --batch-size 32 --reference --optimized ;;
    cifar)  # training throughput of every small-input variant on Fashion-MNIST-sized images
      mapfile -t CIFAR < <($PY -c "from cnnzoo import list_models; print('\n'.join(list_models('*_cifar')))")
      bench cifar "${CIFAR[@]}" --mode train --batch-size 128 --input-size 1 28 28 ;;
    tables) ;;  # no benchmark: only the markdown of the .json files already in OUT_DIR
    *) echo "unknown part $part (reference, fast, cifar, tables)" >&2; exit 2 ;;
  esac
done

$PY - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
for path in sorted(out.glob("*.json")):
    rep = json.loads(path.read_text())
    cmd = (out / f"{path.stem}.cmd").read_text().strip()
    print(f"\n### {path.stem}\n\n`{cmd.lstrip('$ ')}`\n")
    print(f"{rep['device_name']}, {rep['threads']} threads, torch {rep['torch']}; matmul peak "
          f"{rep['matmul_peak_gflops']:.1f} GFLOP/s ({rep['matmul_peak_dtype']}); load average "
          f"{rep['load_avg_start']:.1f} -> {rep['load_avg_end']:.1f} on {rep['cpu_count']} CPUs\n")
    print("| model | mode | variant | batch | img/s | ± % | p50 ms | p90 ms | GMACs | GFLOP/s | % of peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rep["results"]:
        variant = r["variant"] + (f" ({r['backend']})" if r.get("backend") else "")
        share = "-" if r["gflops"] is None else f"{100 * r['gflops'] / rep['matmul_peak_gflops']:.0f}"
        gm = "-" if r["gmacs"] is None else f"{r['gmacs']:.3f}"
        gf = "-" if r["gflops"] is None else f"{r['gflops']:.1f}"
        print(f"| {r['model']} | {r['mode']} | {variant} | {r['batch_size']} | {r['images_per_s']:.1f} | "
              f"{r['spread_pct']:.0f} | {r['latency_ms_p50']:.1f} | {r['latency_ms_p90']:.1f} | {gm} | {gf} | {share} |")
    if rep["ratios"]:
        print("\n| model | mode | batch | ours/reference | 90% CI | same operators | optimized/reference | optimized/ours |")
        print("|---|---|---|---|---|---|---|---|")
        fmt = lambda q, k: f"{q[k]:.2f}" if k in q else "-"
        for q in rep["ratios"]:
            ci = "-" if "ours_over_reference_ci90" not in q else "{:.2f}-{:.2f}".format(*q["ours_over_reference_ci90"])
            same = "-" if "same_ops" not in q else ("yes" if q["same_ops"] else "**no**")
            same += " (channels-last pools)" if q.get("channels_last_pooling") else ""
            print(f"| {q['model']} | {q['mode']} | {q['batch_size']} | {fmt(q, 'ours_over_reference')} | {ci} | {same} | "
                  f"{fmt(q, 'optimized_over_reference')} | {fmt(q, 'optimized_over_ours')} |")
PY
