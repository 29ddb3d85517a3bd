#!/usr/bin/env bash
# Create .venv (if missing) and install kdframe with its built-in plugins. Idempotent.
# constraints.txt pins torch to the CPU wheel this project's machines carry; real users may drop it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -e ".[test]" -e plugins/hippynn -e plugins/torchani -e "plugins/mace[cuequivariance]" -e plugins/qc \
    -e examples/kdframe-pairnet
.venv/bin/python -m pip check
