#!/usr/bin/env bash
# Make kdframe/datasets/hessian_small.h5: 4 small molecules with GFN2-xTB energies, forces and Hessians
# (central differences of xTB forces), for projected Hessian learning (configs/hessian/).
#
#   PYTHON=.venv/bin/python data/make_hessian_set.sh     # ~1-3 min on one core
#
# Works in runs/data/ (its journals stay there, beside the file, never in the package), then copies the
# merged file into kdframe/datasets/.
# Every step resumes, like data/make_bundled.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
KD="$PY -m kdframe.cli data"
WORK=runs/data/hessian_small.h5
mkdir -p runs/data

[ -f "$WORK" ] || $KD sample "$WORK" --seed 0 \
    --smiles water:O ammonia:N methane:C formaldehyde:C=O \
    --conformers 1 --max-conformers 1 --normal-modes 24 --nms-temperatures 300 600 1000 \
    --md-frames 6 --md-temperatures 500 1000
$KD label "$WORK" --method xtb --workers 1 --no-progress
$KD label "$WORK" --method xtb --hessian --workers 1 --no-progress
cp "$WORK" kdframe/datasets/hessian_small.h5
$KD info kdframe/datasets/hessian_small.h5 --per-molecule
