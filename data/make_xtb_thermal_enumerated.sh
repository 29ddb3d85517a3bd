#!/usr/bin/env bash
# Thermal configurations of the molecules of data/molecules/organic_chno_enumerated.smi (every stable CHNO molecule
# with 1-6 heavy atoms, scripts/enumerate_molecules.py) that are not in organic_chno.smi: 1,980 by SMILES, none of
# the extensibility set. Sampled like data/make_xtb_thermal_large.sh: 4 RDKit conformers, the lowest
# GFN2-xTB-optimised one kept, 12 normal-mode samples at 300 K and 6 xTB MD frames at 500 K. Unlabelled: a run's
# teachers label it (labelled_by: teachers). Is a complete neighbourhood of small molecules, the way ANI-1x's own
# training molecules were enumerated, what carries the teacher to new ones where more and larger molecules did not?
# 2026-12-07: 37,496 configurations of 1,974 molecules in 21 min with 2 workers, OMP_NUM_THREADS=1, nothing else
# running; 6 strained molecules (4-ring ureas and amidines, bicyclic imines) skipped and named by the sampler.
# Resumable: rerun it (the file is written every few minutes). Written to runs/data, not committed.
#   WORKERS=2 data/make_xtb_thermal_enumerated.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORKERS=${WORKERS:-1}  # sampling processes (the same file whatever the number)
OUT=runs/data/xtb_thermal_enumerated.h5
LIST=runs/data/organic_chno_enumerated_only.smi
mkdir -p runs/data

# the enumerated list less the 751 (both lists write RDKit canonical SMILES without stereo)
awk 'NR == FNR { if ($0 !~ /^#/ && NF) seen[$2] = 1; next } $0 !~ /^#/ && NF && !($2 in seen)' \
    data/molecules/organic_chno.smi data/molecules/organic_chno_enumerated.smi > "$LIST.tmp" && mv "$LIST.tmp" "$LIST"
$PY -m kdframe.cli data sample "$OUT" --append --seed 3 --smiles-file "$LIST" \
    --conformers 4 --max-conformers 1 --normal-modes 12 --nms-temperatures 300 \
    --md-frames 6 --md-temperatures 500 --workers "$WORKERS"
$PY -m kdframe.cli data info "$OUT"
