#!/usr/bin/env bash
# Create (or update) the project-local virtualenv with the pinned OpenMMLab stack.
#
# Idempotent: each step is skipped when its inputs did not change.
#   VENV             where the virtualenv lives (default: .venv)
#   PYTHON3          the interpreter that creates it (default: python3)
#   MMSFR_WHEEL_DIR  optional directory with a prebuilt mmcv 2.1.0 wheel for torch 2.14.1
#
# Example:  tools/setup_env.sh && .venv/bin/python -c "import mmsfr"
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON3=${PYTHON3:-python3}
PY="$VENV/bin/python"

if [[ ! -x "$PY" ]]; then
    echo "[setup] creating virtualenv $VENV"
    "$PYTHON3" -m venv "$VENV"
fi

# The C++ sources count too: changed kernels must be rebuilt.
reqs_hash=$(cat requirements/*.txt setup.py mmsfr/csrc/* | sha256sum | cut -c1-16)
stamp="$VENV/.mmsfr-stack-$reqs_hash"
if [[ -f "$stamp" ]] && "$PY" -c "import mmsfr" >/dev/null 2>&1; then
    echo "[setup] $VENV is up to date"
    exit 0
fi

"$PY" -m pip install --upgrade pip
"$PY" -m pip install -r requirements/torch.txt
"$PY" -m pip install -r requirements/build.txt
"$PY" -m pip install -r requirements/runtime.txt -r requirements/deploy.txt -r requirements/tests.txt
PYTHON="$PY" tools/install_mmcv.sh
"$PY" -m pip install --no-deps --no-build-isolation -e .
"$PY" -c "import mmsfr; print('[setup] mmsfr', mmsfr.__version__, 'ready')"
rm -f "$VENV"/.mmsfr-stack-*
touch "$stamp"
