#!/usr/bin/env bash
# Make runs/data/hessian_real.h5: the Hessian set of real size (issue 25). 64 CHNO molecules of 12-25 atoms
# (data/molecules/hessian_real.smi, none of the extensibility set), about 10 conformations each (up to 2
# xTB-optimised conformers, 6 normal-mode samples at 300 and 600 K, 2 xTB MD frames at 500 K), with GFN2-xTB
# energies, forces and Hessians (central differences of xTB forces, 6N force calls per conformation).
#
#   PYTHON=.venv/bin/python data/make_hessian_real.sh     # ~15 min on one core (5 min sampling, ~0.8 s per Hessian);
#   WORKERS=N labels with N processes
#
# Too large to bundle (~30 MB of Hessians); it stays in runs/data/. Every step resumes (rerun after a kill).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
KD="$PY -m kdframe.cli data"
WORKERS=${WORKERS:-1}
OUT=runs/data/hessian_real.h5
mkdir -p runs/data

[ -f "$OUT" ] || $KD sample "$OUT" --seed 0 --smiles-file data/molecules/hessian_real.smi \
    --conformers 4 --max-conformers 2 --normal-modes 6 --nms-temperatures 300 600 \
    --md-frames 2 --md-temperatures 500
$KD label "$OUT" --method xtb --workers "$WORKERS" --no-progress
$KD label "$OUT" --method xtb --hessian --workers "$WORKERS" --no-progress
$KD info "$OUT"
