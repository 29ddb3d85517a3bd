#!/usr/bin/env bash
# Thermal configurations of several conformers per molecule, sampled the way the bundled extensibility set was
# (there: 30 RDKit embeddings, up to 6 xTB-optimised conformers kept, normal-mode samples at 300 K and xTB MD at
# 500 K). For the 751 molecules of data/molecules/organic_chno.smi (none of the extensibility set): 8 RDKit
# conformers, up to 4 distinct GFN2-xTB-optimised ones kept, 24 normal-mode samples at 300 K and 12 MD frames at
# 500 K spread over them. Unlabelled: a run's teachers label it (labelled_by: teachers). Compare
# data/make_xtb_sampled.sh: one conformer per molecule, half of it at 600 and 1000 K.
# 28,647 configurations, none skipped; about 40 min with 2 workers (2026-12-06). Sampled anew on a fresh machine with
# OMP_NUM_THREADS=1 and nothing else running: 28,648 configurations in 18 min (2026-12-07; why one more is not known,
# the first file's thread count was not recorded). Resumable: rerun it. Written to
# runs/data, not committed.
#   WORKERS=2 data/make_xtb_thermal_conformers.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORKERS=${WORKERS:-1}  # sampling processes (the same file whatever the number)
OUT=runs/data/xtb_thermal_conformers.h5
mkdir -p runs/data

$PY -m kdframe.cli data sample "$OUT" --append --seed 1 --smiles-file data/molecules/organic_chno.smi \
    --conformers 8 --max-conformers 4 --normal-modes 24 --nms-temperatures 300 \
    --md-frames 12 --md-temperatures 500 --workers "$WORKERS"
$PY -m kdframe.cli data info "$OUT"
