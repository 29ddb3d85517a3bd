#!/usr/bin/env bash
# The teacher's level for the multi-fidelity runs (issue 25: "a teacher ensemble's labels as a fidelity of their
# own"), from the pretrained ANI-1ccx ensemble (no alignment: its own energy scale, as any level of theory):
# - runs/data/train_pool_ani1ccx.h5: a copy of the bundled pool with ani1ccx.energy and ani1ccx.forces added
#   (the ensemble's energies and averaged forces; 0.02 s per configuration, about 30 s);
# - runs/data/xtb_sampled_ani1ccx.h5: the configurations of runs/data/xtb_sampled.h5 (data/make_xtb_sampled.sh
#   first) as a packed file with teacher.energy and teacher.forces (a few minutes).
# The originals are left as they are. Resumable: rerun it. Written to runs/data, not committed.
#   kdframe models fetch ani1ccx && data/make_teacher_fidelity.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
KD="$PY -m kdframe.cli data"
POOL=runs/data/train_pool_ani1ccx.h5
SAMPLED=runs/data/xtb_sampled_ani1ccx.h5
mkdir -p runs/data

[ -e "$POOL" ] || { cp kdframe/datasets/train_pool.h5 "$POOL.part" && mv "$POOL.part" "$POOL"; }
$KD label "$POOL" --method ani1ccx --workers 0 --no-progress
[ -e "$SAMPLED" ] || $KD teacher-label runs/data/xtb_sampled.h5 "$SAMPLED" --pretrained ani1ccx --no-progress
$KD info "$POOL"
