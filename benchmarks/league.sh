#!/usr/bin/env bash
# The CPU league of BENCHMARKS.md: the default models (one small-input variant of every family in
# the zoo, LeNet-5 and both MobileNets) trained with the default recipe, each under the same time
# budget: its speed is measured on a few batches, then it gets the epochs (or the training subset)
# that fit. About BUDGET x 10 minutes plus a little measuring; rerunning continues where it stopped.
# Usage (repo root):  bash benchmarks/league.sh [extra cnnzoo league arguments]
# Environment: BUDGET (minutes per model, default 3), THREADS (default 2), OUT (default
# runs/league-cpu), CNNZOO (the command, default "python -m cnnzoo").
set -euo pipefail
PY=${PYTHON:-python}
CNNZOO=${CNNZOO:-"$PY -m cnnzoo"}
BUDGET=${BUDGET:-3}
THREADS=${THREADS:-2}
OUT=${OUT:-runs/league-cpu}
echo "\$ cnnzoo league --budget-minutes $BUDGET --threads $THREADS --out $OUT --no-progress $*" >&2
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
$CNNZOO league --budget-minutes "$BUDGET" --threads "$THREADS" --out "$OUT" --no-progress "$@"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
