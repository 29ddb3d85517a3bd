#!/usr/bin/env bash
# Create .venv (if missing) and install kdframe with its built-in plugins. Idempotent.
# constraints.txt pins torch to the CPU wheel this project's machines carry; real users may drop it.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q -c constraints.txt torch==2.13.0 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip install -q -c constraints.txt -e ".[test]" -e plugins/hippynn -e plugins/torchani \
    -e plugins/mace -e plugins/qc 2>&1 | grep -v "is ignored" || true
.venv/bin/python -m pip check
