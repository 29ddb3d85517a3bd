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
set -uo pipefail
cd "$(dirname "$0")/.."
SITE=$PWD/.site
install() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" "$@"; }

case "${1:?usage: gpu_session.sh ops|run}" in
ops)
  install --upgrade .whl/cue_ops/*.whl && echo "cuequivariance-ops installed in $SITE"
  ;;
run)
  install --upgrade .whl/base/*.whl .whl/cue_torch/*.whl || exit 1
  install --no-build-isolation .whl/base/*.tar.gz . plugins/hippynn plugins/torchani plugins/mace || exit 1
  export PYTHONPATH=$SITE KDFRAME_CACHE=$PWD/.gpu/cache PYTHONUNBUFFERED=1
  mkdir -p runs && cp -r .gpu/runs/. runs/
  results=${OUT:-/tmp/gpu_out}/results
  mkdir -p "$results"
  log=${OUT:-/tmp/gpu_out}/log.txt
  step() {  # step SECONDS COMMAND...: run with a time limit, keep the output in the log
    local limit=$1; shift
    echo "== $* (limit ${limit} s)" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
    echo "== exit ${PIPESTATUS[0]}" | tee -a "$log"
  }
  step 20 nvidia-smi
  step 60 python3 benchmarks/gpu_checks.py --device cuda --out "$results/gpu_checks_cuda.md"
  step 90 python3 -m pytest -q -p no:cacheprovider plugins/mace/tests/test_mace_cuequivariance.py tests/test_stress.py
  step 60 python3 benchmarks/mace_cuequivariance.py --device cuda --out "$results/mace_cuequivariance_cuda.md"
  step 120 python3 benchmarks/run.py cost --device cuda --repeats 3 --max-atoms 400000 --out "$results/cost_gpu.md"
  step 90 python3 benchmarks/run.py md --device cuda --timesteps 0.5 1 2 --replicas 2 --out "$results/md_gpu.md"
  step 45 python3 benchmarks/run.py labelling --device cuda --out "$results/labelling_gpu.md"
  tar czf "${OUT:-/tmp/gpu_out}/results.tgz" -C "$results" .
  ;;
*)
  echo "usage: gpu_session.sh ops|run" >&2; exit 2
  ;;
esac
