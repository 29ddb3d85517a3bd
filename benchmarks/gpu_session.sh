#!/usr/bin/env bash
# The GPU measurements of issues #5 (MACE cuequivariance) and #10 (benchmarks), as two calls of the `device`
# tool (one machine, 15 min of device time in all; each call at most 10 min).
#
# Here first (CPU, registry reachable): train the cross models (README: Results), `kdframe models fetch ani1ccx`,
# then `scripts/gpu_prepare.sh` (wheels in .whl/, models in .gpu/). Then, the second call at once after the
# first (a machine stays warm 30 s, and the first call's install in .site/ lives only on that machine):
#   run  command="bash benchmarks/gpu_session.sh ops"  carry=[".whl/cue_ops"]                        timeout_s=240
#   run  command="bash benchmarks/gpu_session.sh run"  carry=[".whl/base", ".whl/cue_torch", ".gpu"] timeout_s=600
# (the fused kernels' wheels are 73 MB, over one call's 64 MiB; with the repo the calls carry 48 and 59 MiB).
# The results come back as results.tgz:
# unpack it into benchmarks/results/ and commit. A suite that runs past its limit writes nothing; its log
# lines are in log.txt. If `ops` did not reach the same machine, gpu_checks reports the missing fused kernels.
#
# Issue 22 on a GPU, one call (no cuequivariance): `scripts/gpu_prepare.sh` for .whl/base, then .gpu/ holding
# cache/models/ani1ccx and the students to time in models/ (model.pt files renamed), and the sampled configurations:
#   run  command="bash benchmarks/gpu_session.sh scale"  carry=[".whl/base", ".gpu", "runs/generated/chno_50k.h5"]
# It times the students in .gpu/models against ANI-1ccx on the GPU, checks the architectures there, has the
# teachers label the configurations once, then trains the students of SCALE_CONFIGS side by side until
# SCALE_SECONDS after its start (each stops at its own criterion or is killed there; metrics.csv keeps its epochs),
# times the first one if it finished, and returns scale.tgz (reports, metrics, models, logs). SCALE_CHECKS=0
# skips the architecture checks.
set -uo pipefail
cd "$(dirname "$0")/.."
SITE=$PWD/.site
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$@"; }

results=${OUT:-/tmp/gpu_out}/results
log=${OUT:-/tmp/gpu_out}/log.txt
setup() {  # the environment for the carried wheels (kdframe and its plugins among them: gpu_prepare.sh builds them)
  export PYTHONPATH=$SITE KDFRAME_CACHE=$PWD/.gpu/cache PYTHONUNBUFFERED=1
  mkdir -p "$results"
}
step() {  # step SECONDS COMMAND...: run with a time limit, keep the output in the log
  local limit=$1; shift
  echo "== $* (limit ${limit} s)" | tee -a "$log"
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  echo "== exit ${PIPESTATUS[0]}" | tee -a "$log"
}

case "${1:?usage: gpu_session.sh ops|run|scale}" in
ops)
  install --upgrade .whl/cue_ops/*.whl && echo "cuequivariance-ops installed in $SITE"
  ;;
run)
  install --upgrade .whl/base/*.whl .whl/cue_torch/*.whl || exit 1
  setup
  mkdir -p runs && cp -r .gpu/runs/. runs/
  step 20 nvidia-smi
  step 60 python3 benchmarks/gpu_checks.py --device cuda --out "$results/gpu_checks_cuda.md"
  step 90 python3 -m pytest -q -p no:cacheprovider plugins/mace/tests/test_mace_cuequivariance.py tests/test_stress.py
  step 60 python3 benchmarks/mace_cuequivariance.py --device cuda --out "$results/mace_cuequivariance_cuda.md"
  step 120 python3 benchmarks/run.py cost --device cuda --repeats 3 --max-atoms 400000 --out "$results/cost_gpu.md"
  step 90 python3 benchmarks/run.py md --device cuda --timesteps 0.5 1 2 --replicas 2 --out "$results/md_gpu.md"
  step 45 python3 benchmarks/run.py labelling --device cuda --out "$results/labelling_gpu.md"
  tar czf "${OUT:-/tmp/gpu_out}/results.tgz" -C "$results" .
  ;;
scale)
  start=$(date +%s)
  install --upgrade .whl/base/*.whl || exit 1
  setup
  export OMP_NUM_THREADS=1
  speed() { step "$1" python3 benchmarks/student_speed.py --device cuda --student "$2" --pretrained ani1ccx \
              --box-atoms 196 3791 30000; }
  step 20 nvidia-smi
  for m in .gpu/models/*.pt; do speed 90 "$m"; done
  read -ra configs <<< "${SCALE_CONFIGS:-configs/scale/ani1ccx_to_torchani_20k_wide.yaml}"
  deadline=$((start + ${SCALE_SECONDS:-430}))
  train() {  # train CONFIG: in the background until the deadline, its output in results/
    timeout -s KILL $((deadline - $(date +%s))) python3 -m kdframe.cli run --quiet "$1" \
      > "$results/$(basename "$1" .yaml).log" 2>&1 &
    last=$!
  }
  run_dir() { python3 -c "import sys; from kdframe.workflows.base import load_config
print(load_config(sys.argv[1])[1].run_dir)" "$1"; }
  train "${configs[0]}"
  knowledge=$(run_dir "${configs[0]}")/knowledge
  # The teachers label the sampled configurations once; the other runs of the same seed reuse that file (same
  # key: same aligned teachers, same input file; another seed aligns the teachers on another split).
  until ls "$knowledge"/teacher_labels-*.h5 >/dev/null 2>&1 || [ "$(date +%s)" -ge "$deadline" ] \
      || ! kill -0 "$last" 2>/dev/null; do sleep 2; done
  echo "== labelled after $(( $(date +%s) - start )) s: $(ls "$knowledge" 2>&1)" | tee -a "$log"
  for c in "${configs[@]:1}"; do
    dir=$(run_dir "$c"); mkdir -p "$dir/knowledge" && cp "$knowledge"/teacher_labels-*.h5 "$dir/knowledge/"
    train "$c"
  done
  wait
  echo "== sweep ended after $(( $(date +%s) - start )) s" | tee -a "$log"
  [ "${SCALE_CHECKS:-1}" = 1 ] && step 60 python3 benchmarks/gpu_checks.py --device cuda --out "$results/gpu_checks_cuda.md"
  model=$(run_dir "${configs[0]}")/student/model.pt
  [ -f "$model" ] && speed 45 "$model"
  dirs=(); for c in "${configs[@]}"; do dirs+=("$(run_dir "$c")"); done
  find "${dirs[@]}" -path '*/knowledge' -prune -o -type f \( -name '*.md' -o -name '*.csv' -o -name '*.json' \
    -o -name model.pt -o -name '*.png' \) -print | tar czf "$results/runs.tgz" -T - 2>>"$log"
  cp "$log" "$results/"
  tar czf "${OUT:-/tmp/gpu_out}/scale.tgz" -C "$results" . && rm -rf "$results"
  ;;
*)
  echo "usage: gpu_session.sh ops|run|scale" >&2; exit 2
  ;;
esac
