#!/usr/bin/env bash
# Prepare, here (where the package registry is reachable), what benchmarks/gpu_session.sh needs on the GPU
# machine of the `device` tool: the trained models (.gpu/) and the wheels that machine lacks for kdframe, its three architecture plugins and MACE's cuequivariance kernels. That machine has
# Python 3.12, torch 2.11+cu130, numpy, scipy, h5py, matplotlib, tqdm, pyyaml, pluggy, sympy and opt_einsum
# but no registry. A carry is limited to 64 MiB, and the fused kernels' wheels alone are 73 MB, so they
# come in three folders that travel in separate calls (benchmarks/gpu_session.sh says which):
#   .whl/base      kdframe's and the plugins' missing dependencies, cuequivariance(-torch)   (~10 MB)
#   .whl/cue_ops   cuequivariance-ops-cu13        (the CUDA kernels library, ~45 MB)
#   .whl/cue_torch cuequivariance-ops-torch-cu13  (its torch bindings, ~29 MB)
# torchani lists zarr, which only its dataset tools import: not carried.
# Version pins follow constraints.txt / what the CPU environment runs (pip check is clean there).
set -euo pipefail
cd "$(dirname "$0")/.."
platform=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
          --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
fetch() {  # fetch FOLDER PACKAGE...
  local dir=".whl/$1"; shift
  mkdir -p "$dir"
  for p in "$@"; do
    python3 -m pip download -q --no-deps --only-binary=:all: "${platform[@]}" -d "$dir" "$p"
  done
}
fetch base hippynn==0.1.3 torchani==2.9.0 mace-torch==0.3.16 e3nn==0.4.4 opt-einsum-fx ase==3.29.0 matscipy vesin \
  torch-ema configargparse prettytable wcwidth lmdb orjson gitpython gitdb smmap \
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types typing-inspection \
  cuequivariance==0.13.0 cuequivariance-torch==0.13.0 platformdirs
python3 -m pip download -q --no-deps --no-binary=:all: -d .whl/base python-hostlist
# Wheels of the pure-Python packages, built here from clean build folders (setuptools reuses build/lib, which
# would keep deleted modules): that machine then only unpacks wheels.
rm -rf .whl/base/kdframe*.whl build plugins/*/build
python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl/base . plugins/hippynn plugins/torchani plugins/mace \
  .whl/base/python_hostlist-*.tar.gz
rm .whl/base/python_hostlist-*.tar.gz
fetch cue_ops cuequivariance-ops-cu13==0.13.0
fetch cue_torch cuequivariance-ops-torch-cu13==0.13.0

# The models the GPU suites use: the cross runs' students, controls and teachers (train them first, README:
# Results) and the pretrained ANI-1ccx ensemble (kdframe models fetch ani1ccx), model files only.
# .gpu/models (the students `gpu_session.sh scale` times) is left as it is.
rm -rf .gpu/runs .gpu/cache && mkdir -p .gpu/cache
if [ -d runs/cross ]; then
  find runs/cross -name model.pt -path '*/student/*' -o -name model.pt -path '*/control/*' \
    -o -name model.pt -path '*/teacher_*' | while read -r f; do mkdir -p ".gpu/$(dirname "$f")"; cp "$f" ".gpu/$f"; done
fi
cp -r "${KDFRAME_CACHE:-$HOME/.cache/kdframe}/models" .gpu/cache/
du -sh .whl/* .gpu
