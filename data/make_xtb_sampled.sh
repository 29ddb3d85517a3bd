#!/usr/bin/env bash
# The cheap level of the three-level multi-fidelity runs (issue 25): the 751 molecules of
# data/molecules/organic_chno.smi (none of the bundled extensibility set). Per molecule: 2 RDKit conformers, the
# lowest xTB-optimised one kept, 12 normal-mode samples (300 and 600 K) and 12 xTB MD frames (500 and 1000 K);
# 18,750 configurations, labelled with GFN2-xTB energies and forces (0.005 s each). About 75 min on one core
# shared with other jobs, nearly all of it sampling. WORKERS=2 samples two molecules at a time, with the same file:
# 22 min of sampling and 1 min of xTB labels on the 2 cores (2026-12-06, nothing else running for most of it); on a
# fresh machine with nothing else running, 8 min of sampling and 1 min of labels (2026-12-07, OMP_NUM_THREADS=1).
# Resumable: rerun it. Written to runs/data, not committed.
#   WORKERS=2 data/make_xtb_sampled.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
KD="$PY -m kdframe.cli data"
WORKERS=${WORKERS:-1}  # sampling and labelling processes (the same file whatever the number)
OUT=runs/data/xtb_sampled.h5
mkdir -p runs/data

$KD sample "$OUT" --append --seed 0 --smiles-file data/molecules/organic_chno.smi \
    --conformers 2 --max-conformers 1 --normal-modes 12 --nms-temperatures 300 600 \
    --md-frames 12 --md-temperatures 500 1000 --workers "$WORKERS"
$KD label "$OUT" --method xtb --workers "$WORKERS" --no-progress
$KD info "$OUT"
