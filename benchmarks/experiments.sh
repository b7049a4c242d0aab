#!/usr/bin/env bash
# The five design experiments of `cnnzoo experiment` (3x3 stacks, batch norm vs dropout,
# cardinality, squeeze-and-excitation, MobileNet's knobs), each with 3 seeds per variant and its own
# recipe, sized for about an hour on a quiet 2-core CPU: about five hours in all. Writes
# docs/experiments/NAME.json and NAME.png; rerunning skips finished runs and continues interrupted ones.
# Usage (repo root):  bash benchmarks/experiments.sh [NAME ...] [-- extra cnnzoo experiment arguments]
# Environment: SEEDS (default 3), THREADS (default 2), OUT (run folders, default runs/experiments),
# RESULTS (default docs/experiments), CNNZOO (the command, default "python -m cnnzoo").
set -euo pipefail
PY=${PYTHON:-python}
CNNZOO=${CNNZOO:-"$PY -m cnnzoo"}
SEEDS=${SEEDS:-3}
THREADS=${THREADS:-2}
OUT=${OUT:-runs/experiments}
RESULTS=${RESULTS:-docs/experiments}
names=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do names+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#names[@]} -gt 0 ] || names=(stack3x3 bn-dropout cardinality se mobilenet)
for name in "${names[@]}"; do
  echo "\$ cnnzoo experiment $name --seeds $SEEDS --threads $THREADS --out $OUT --results $RESULTS --no-progress $*" >&2
  echo "$(date -u +%FT%TZ) load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  start=$(date +%s)
  $CNNZOO experiment "$name" --seeds "$SEEDS" --threads "$THREADS" --out "$OUT" --results "$RESULTS" --no-progress "$@"
  echo "$(date -u +%FT%TZ) $name: $(( $(date +%s) - start )) s wall; load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
