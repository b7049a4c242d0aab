#!/usr/bin/env bash
# The degradation figure of BENCHMARKS.md (He et al. 2015, Fig. 1 and 6; seed section 5.3):
# plain20/plain56 and resnet20/resnet56 trained with one SGD recipe on a seeded Fashion-MNIST
# subset, then training error (dashed) and test error (solid) per epoch on one figure, and the
# computed finding. Rerunning continues where it stopped (finished runs are skipped).
# Estimate on this project's 2-core CPU, 2 threads, quiet: 20-layer nets about 650 training / 2,000
# evaluation img/s, 56-layer about 220 / 750 img/s (measured loaded at 1 thread: 400 and 140 img/s
# training), so an epoch of all four = 6,000 x (2/650 + 2/220) s of training + 10,000-image test
# evaluations (about 37 s) = about 110 s; 10 epochs = about 18 min quiet, 25-30 min if 2 threads
# scale poorly.
# What to expect: a pilot (3,000 images x 20 epochs = 470 SGD steps, loaded CPU) ended with plain56
# far above plain20 in training error, resnet56 far below plain56, but resnet56 still a few points
# above resnet20: He et al.'s "deeper residual net is better" appears after many more steps (their
# 64k). For that part, e.g. EPOCHS=30 SUBSET=0 bash benchmarks/degradation.sh --device cuda.
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
