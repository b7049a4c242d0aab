#!/usr/bin/env bash
# The degradation figure of BENCHMARKS.md (He et al. 2015, Fig. 1 and 6):
# plain20/plain56 and resnet20/resnet56 trained with one SGD recipe on a seeded Fashion-MNIST
# subset, then training error (dashed) and test error (solid) per epoch on one figure, and the
# computed finding. Rerunning continues where it stopped (finished runs are skipped).
# Measured (BENCHMARKS.md): the defaults took 1,535 s on 1 thread of the 2-core CPU beside another
# job, and reproduce both halves of the finding (plain56 trains worse than plain20, resnet56 better
# than resnet20). Batch 32 matters: at batch 128 the same images give resnet56 too few steps.
# Usage (repo root): bash benchmarks/degradation.sh [extra cnnzoo degradation arguments]
# Environment: EPOCHS (10), SUBSET (6000 training images), THREADS (2), OUT (runs/degradation),
# PLOT (docs/degradation.png), CNNZOO (the command, default "python -m cnnzoo").
set -euo pipefail
PY=${PYTHON:-python}
CNNZOO=${CNNZOO:-"$PY -m cnnzoo"}
EPOCHS=${EPOCHS:-10}
SUBSET=${SUBSET:-6000}
THREADS=${THREADS:-2}
OUT=${OUT:-runs/degradation}
PLOT=${PLOT:-docs/degradation.png}
echo "\$ cnnzoo degradation --depths 20 56 --epochs $EPOCHS --subset $SUBSET --threads $THREADS --out $OUT --plot $PLOT --no-progress $*" >&2
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
start=$(date +%s)
$CNNZOO degradation --depths 20 56 --epochs "$EPOCHS" --subset "$SUBSET" --threads "$THREADS" --out "$OUT" \
  --plot "$PLOT" --no-progress "$@"
echo "wall time: $(( $(date +%s) - start )) s; load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
