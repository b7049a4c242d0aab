#!/usr/bin/env bash
# The CPU tier of the league (BENCHMARKS.md, README's chart): one member per family, each trained
# with the fast recipe for the epochs that fit 15 minutes on 2 threads, about 2.5 hours in all.
# Rerunning continues where it stopped (a finished entry is skipped, an interrupted one resumed).
# Then the entries go to docs/league.json and the chart docs/compare.png is drawn from them.
# Usage (repo root):  bash benchmarks/league.sh [extra cnnzoo league arguments, e.g. --models resnet20]
# Environment: OUT (default runs/league-cpu), DOCS (default docs), CNNZOO (default "python -m cnnzoo").
set -euo pipefail
PY=${PYTHON:-python}
CNNZOO=${CNNZOO:-"$PY -m cnnzoo"}
OUT=${OUT:-runs/league-cpu}
DOCS=${DOCS:-docs}
echo "\$ cnnzoo league --tier cpu --out $OUT --no-progress $*" >&2
echo "$(date -u +%FT%TZ) load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
$CNNZOO league --tier cpu --out "$OUT" --no-progress "$@"
echo "$(date -u +%FT%TZ) load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cp "$OUT/league.json" "$DOCS/league.json"
$CNNZOO compare "$DOCS/league.json" --out "$DOCS/compare.png"
