#!/usr/bin/env bash
# Thermal configurations of the molecules of data/molecules/organic_chno_large.smi that are not in organic_chno.smi
# (2,963 by SMILES; mostly 7-8 heavy atoms; none of the extensibility set), sampled like the extensibility set's thermal
# configurations: 4 RDKit conformers, the lowest GFN2-xTB-optimised one kept, 12 normal-mode samples at 300 K and 6
# xTB MD frames at 500 K. Unlabelled: a run's teachers label it (labelled_by: teachers). Does thermal data of five
# times the molecules (751 + 2,963) carry further to new ones than more of the 751's (data/make_xtb_thermal_conformers.sh)?
# About 1.2 s per molecule with 2 workers (2026-12-07: the first 1,000 molecules, 19,000 configurations, in 20 min,
# a training run labelling beside it at low priority), so about an hour for all; resumable: rerun it (the file is
# written every few minutes).
# MOLECULES=N samples only the list's first N into xtb_thermal_large_N.h5 (the same configurations as in the whole
# file). Written to runs/data, not committed.
#   WORKERS=2 data/make_xtb_thermal_large.sh
#   MOLECULES=1000 WORKERS=2 data/make_xtb_thermal_large.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
WORKERS=${WORKERS:-1}  # sampling processes (the same file whatever the number)
MOLECULES=${MOLECULES:-}  # empty: all 2,963
[[ -z $MOLECULES || $MOLECULES =~ ^[1-9][0-9]*$ ]] \
    || { echo "$0: MOLECULES=$MOLECULES: expected a positive whole number (or unset for all 2,963)" >&2; exit 2; }
OUT=runs/data/xtb_thermal_large${MOLECULES:+_$MOLECULES}.h5
LIST=runs/data/organic_chno_large_only${MOLECULES:+_$MOLECULES}.smi
mkdir -p runs/data

# the large list less the 751 (by SMILES: both lists write the same SMILES for a molecule, numbered names differ),
# in SHA-1 order of the SMILES rather than the list's order by group, so that its first N molecules are a uniform
# draw (each molecule's sampling depends on its SMILES, not its place)
awk 'NR == FNR { if ($0 !~ /^#/ && NF) seen[$2] = 1; next } $0 !~ /^#/ && NF && !($2 in seen)' \
    data/molecules/organic_chno.smi data/molecules/organic_chno_large.smi \
    | $PY -c 'import hashlib, sys; n = int(sys.argv[1]) if sys.argv[1] else None
print("".join(sorted(sys.stdin, key=lambda l: hashlib.sha1(l.split()[1].encode()).hexdigest())[:n]), end="")' \
    "$MOLECULES" > "$LIST.tmp" && mv "$LIST.tmp" "$LIST"
$PY -m kdframe.cli data sample "$OUT" --append --seed 2 --smiles-file "$LIST" \
    --conformers 4 --max-conformers 1 --normal-modes 12 --nms-temperatures 300 \
    --md-frames 6 --md-temperatures 500 --workers "$WORKERS"
$PY -m kdframe.cli data info "$OUT"
