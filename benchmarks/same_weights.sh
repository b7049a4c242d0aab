#!/bin/bash
# Deterministic training gives bit-identical weights at another revision and in this tree:
#   bash benchmarks/same_weights.sh REVISION
# trains LeNet-5 (1 epoch, 5000 images) and the fast recipe (1 epoch, 2000 images, fp32) with
# --deterministic --seed 0 from a checkout of REVISION and from this tree, on this machine, and
# compares every tensor of last.safetensors and best.safetensors.
set -euo pipefail
rev=${1:?usage: bash benchmarks/same_weights.sh REVISION}
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d)
trap 'git -C "$root" worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add --quiet --detach "$work/base" "$rev"
for side in base this; do
  src=$([ "$side" = base ] && echo "$work/base" || echo "$root")
  (cd "$work" && PYTHONPATH="$src" "$py" -m cnnzoo train --model lenet5 --epochs 1 --deterministic --seed 0 \
     --train-subset 5000 --out "$work/$side-lenet5" --no-progress >/dev/null)
  (cd "$work" && PYTHONPATH="$src" "$py" -m cnnzoo train --recipe fast --epochs 1 --train-subset 2000 --no-amp \
     --deterministic --seed 0 --out "$work/$side-fast" --no-progress >/dev/null)
done
"$py" - "$work" <<'PY'
import sys
from pathlib import Path

from safetensors.torch import load_file

work, same = Path(sys.argv[1]), True
for run in ("lenet5", "fast"):
    for name in ("last.safetensors", "best.safetensors"):
        a, b = load_file(work / f"base-{run}" / name), load_file(work / f"this-{run}" / name)
        equal = a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].equal(b[k]) for k in a)
        same &= equal
        print(f"{run} {name}: {len(a)} tensors, {'bit-identical' if equal else 'DIFFERENT'}")
sys.exit(0 if same else 1)
PY
