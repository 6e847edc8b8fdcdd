#!/usr/bin/env bash
# Create (or update) a project-local virtualenv with a tested OpenMMLab stack.
#
# Idempotent: nothing is reinstalled when the requirements, setup.py and the C++ sources
# did not change.
#   VENV             where the virtualenv lives (default: .venv)
#   PYTHON3          the interpreter that creates it (default: python3)
#   MMSFR_STACK      which tested stack: `lock` (default; the newest: requirements/lock.txt)
#                    or `oldest` (torch 2.1.2, numpy < 2: requirements/oldest.txt)
#   MMSFR_WHEEL_DIR  optional directory with a prebuilt mmcv 2.1.0 wheel for that torch
#                    (tools/install_mmcv.sh checks that it loads, else builds from source)
#
# Every pip call is constrained by the stack's file (PIP_CONSTRAINT); the packages'
# own requirements are ranges (setup.py, requirements/*.txt), so mmsfr also installs
# into an existing mmdet environment with `pip install --no-build-isolation .`.
#
# Example:  tools/setup_env.sh && .venv/bin/python -c "import mmsfr"
#           VENV=.venv-oldest MMSFR_STACK=oldest tools/setup_env.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON3=${PYTHON3:-python3}
STACK=${MMSFR_STACK:-lock}
PY="$VENV/bin/python"

case "$STACK" in
    lock|oldest) ;;
    *) echo "[setup] MMSFR_STACK=$STACK: choose 'lock' (newest tested stack) or 'oldest'" >&2
       exit 2 ;;
esac
export PIP_CONSTRAINT="$PWD/requirements/$STACK.txt"

if [[ ! -x "$PY" ]]; then
    echo "[setup] creating virtualenv $VENV ($STACK stack)"
    "$PYTHON3" -m venv "$VENV"
fi

# The C++ sources count too: changed kernels must be rebuilt.
reqs_hash=$( (echo "$STACK"; cat requirements/*.txt setup.py mmsfr/csrc/*.cpp mmsfr/csrc/cpu/*) | sha256sum | cut -c1-16)
stamp="$VENV/.mmsfr-stack-$reqs_hash"
if [[ -f "$stamp" ]] && "$PY" -c "import mmsfr" >/dev/null 2>&1; then
    echo "[setup] $VENV is up to date ($STACK stack)"
    exit 0
fi

"$PY" -m pip install --upgrade pip
"$PY" -m pip install -r requirements/torch.txt
"$PY" -m pip install -r requirements/build.txt
PYTHON="$PY" tools/install_mmcv.sh
"$PY" -m pip install -r requirements/runtime.txt -r requirements/deploy.txt -r requirements/tests.txt
"$PY" -m pip install --no-deps --no-build-isolation -e .
"$PY" -c "import mmsfr; print('[setup] mmsfr', mmsfr.__version__, 'ready')"
rm -f "$VENV"/.mmsfr-stack-*
touch "$stamp"
