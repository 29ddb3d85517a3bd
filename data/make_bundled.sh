#!/usr/bin/env bash
# Regenerate, resume or extend the bundled datasets kdframe/datasets/{train_pool,extensibility}.h5.
#
#   data/make_bundled.sh sample      # RDKit + GFN2-xTB geometries (adds molecules newly listed in data/*.smi)
#   data/make_bundled.sh xtb         # xtb.energy/.forces on everything (seconds)
#   data/make_bundled.sh expensive   # CCSD(T), wB97X, MP2 in the planned order (CPU-hours)
#   data/make_bundled.sh all         # the three above (default)
#
# Every step resumes: rerun the same command after an interruption (kill -9 included); finished
# conformations are never recomputed. The labelling journals live outside the package, in
# data/labelling/<file>.labelling/ (`--journals data/labelling`; by hand: `kdframe data merge FILE
# --journals data/labelling`, `kdframe data info FILE --journals data/labelling`).
# `$KD` is `kdframe data`, run through $PYTHON.
# Environment: PYTHON (default: python), WORKERS (processes, one core each; default 1),
# SNAPSHOT=1 runs from a copy of the code taken at start (for long unattended runs in a tree being edited).
# Background run used for the bundled files (log and PID in /tmp):
#   SNAPSHOT=1 PYTHON=.venv/bin/python nohup data/make_bundled.sh expensive > /tmp/kdframe_labelling.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
W=${WORKERS:-1}
TRAIN=kdframe/datasets/train_pool.h5
EXT=kdframe/datasets/extensibility.h5
JOURNALS=data/labelling

if [ "${SNAPSHOT:-0}" = 1 ]; then
  SNAP=$(mktemp -d /tmp/kdframe-snapshot.XXXXXX)
  cp -r kdframe plugins/qc/kdframe_qc "$SNAP"/
  rm -rf "$SNAP"/kdframe/datasets
  export PYTHONPATH="$SNAP${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1  # the snapshot, not the working tree
  echo "running from code snapshot $SNAP"
fi
KD="$PY -m kdframe.cli data"

sample() {
  $KD sample "$TRAIN" --append --smiles-file data/train_pool.smi --seed 0 \
      --conformers 4 --max-conformers 4 --normal-modes 24 --nms-temperatures 300 600 1000 \
      --md-frames 12 --md-temperatures 500 1000
  $KD sample "$EXT" --append --smiles-file data/extensibility.smi --seed 0 \
      --conformers 30 --max-conformers 6 --normal-modes 6 --nms-temperatures 300 \
      --md-frames 2 --md-temperatures 500
}

label() {  # a failed step (crash, broken code tree) is retried; finished items are kept
  for attempt in 1 2 3; do
    echo "$(date -Is) label $*"
    if $KD label "$@" --journals "$JOURNALS" --workers "$W" --no-progress; then return 0; fi
    sleep 60
  done
  echo "$(date -Is) giving up on: label $*"
}

xtb() {
  label "$TRAIN" --method xtb
  label "$EXT" --method xtb
}

expensive() {
  # 1-2. CCSD(T) on 9 evenly spread conformations of every molecule (smallest first), then wB97X on the same.
  label "$TRAIN" --method "ccsd(t)_dz" --per-molecule 9
  label "$TRAIN" --method wb97x_dz --per-molecule 9
  # 3. Extensibility set: CCSD(T) and wB97X on the xTB-optimised conformers (enough for dE).
  label "$EXT" --method "ccsd(t)_dz" --origin opt
  label "$EXT" --method wb97x_dz --origin opt
  # 4-5. MP2 on everything, then wB97X on the rest of the training pool.
  label "$TRAIN" --method mp2_dz
  label "$TRAIN" --method wb97x_dz
  # 6. The rest of the extensibility set at MP2 (minutes), then wB97X (hours).
  label "$EXT" --method mp2_dz
  label "$EXT" --method wb97x_dz
  # 7. Whatever budget is left: CCSD(T) on more of the training pool.
  label "$TRAIN" --method "ccsd(t)_dz" --per-molecule 20
  label "$TRAIN" --method "ccsd(t)_dz"
  echo "$(date -Is) all labelling done"
}

case "${1:-all}" in
  sample) sample ;;
  xtb) xtb ;;
  expensive) expensive ;;
  all) sample; xtb; expensive ;;
  *) echo "usage: $0 [sample|xtb|expensive|all]" >&2; exit 2 ;;
esac
