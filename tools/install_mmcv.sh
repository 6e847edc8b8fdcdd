#!/usr/bin/env bash
# Install mmcv 2.1.0 *with its compiled ops* into the Python environment of $PYTHON.
#
# mmcv 2.1.0 publishes no wheel for torch 2.14, so it is built from the PyPI sdist:
#   * torch must already be installed and the build must see it: --no-build-isolation;
#   * mmcv's setup.py imports pkg_resources: setuptools>=77,<81 (81 removed it);
#   * MMCV_WITH_OPS=1 compiles the C++ ops (nms, RoIAlign, ...); CPU only here;
#   * mmcv's setup.py hard-codes -std=c++17, but torch 2.14's headers need C++20,
#     so the flag is raised in the unpacked sdist before building.
# The build takes 15-30 min on 2 cores. To reuse a wheel of exactly this build, name a
# directory holding it in MMSFR_WHEEL_DIR; the wheel is only kept if its ops load
# against the installed torch, otherwise the script builds from source.
# pip's wheel cache is keyed by sdist, not by torch version, so every mmcv step runs
# with --no-cache-dir: a wheel built against another torch is never picked up.
#
# Usage: PYTHON=.venv/bin/python [MMSFR_WHEEL_DIR=dir] tools/install_mmcv.sh
set -euo pipefail

PYTHON=${PYTHON:-python}
MMCV_VERSION=2.1.0
PIP=("$PYTHON" -m pip)
# mmcv 2.1.0's runtime requirements (installed explicitly because mmcv itself is --no-deps).
MMCV_DEPS=(addict "mmengine>=0.3.0" numpy packaging Pillow pyyaml yapf "opencv-python>=3")

torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)')
stamp_dir=$("$PYTHON" -c 'import sys; print(sys.prefix)')
stamp="$stamp_dir/.mmcv-${MMCV_VERSION}-built-for-torch-${torch_version}"

check_ops() {
    # Loads the compiled extension and runs two ops: fails on ABI mismatch.
    "$PYTHON" - <<'EOF'
import torch
import mmcv
from mmcv.ops import nms, roi_align
assert mmcv.__version__ == '2.1.0', mmcv.__version__
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
_, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
assert keep.tolist() == [0, 2], keep
out = roi_align(torch.ones(1, 1, 8, 8), torch.tensor([[0., 0., 0., 4., 4.]]), (2, 2))
assert out.shape == (1, 1, 2, 2)
EOF
}

if [[ -f "$stamp" ]] && check_ops >/dev/null 2>&1; then
    echo "[install_mmcv] mmcv ${MMCV_VERSION} with ops already installed for torch ${torch_version}"
    exit 0
fi

"${PIP[@]}" uninstall -y mmcv mmcv-lite mmcv-full >/dev/null 2>&1 || true

if [[ -n "${MMSFR_WHEEL_DIR:-}" ]] && ls "${MMSFR_WHEEL_DIR}"/mmcv-${MMCV_VERSION}-*.whl >/dev/null 2>&1; then
    echo "[install_mmcv] trying the prebuilt wheel in ${MMSFR_WHEEL_DIR}"
    "${PIP[@]}" install --no-cache-dir --no-deps --no-index --find-links "${MMSFR_WHEEL_DIR}" \
        "mmcv==${MMCV_VERSION}"
    "${PIP[@]}" install "${MMCV_DEPS[@]}"
    if check_ops; then
        touch "$stamp"
        exit 0
    fi
    echo "[install_mmcv] the prebuilt wheel does not load against torch ${torch_version}; building" >&2
    "${PIP[@]}" uninstall -y mmcv
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "[install_mmcv] building mmcv ${MMCV_VERSION} from source against torch ${torch_version} (15-30 min on 2 cores)"
"${PIP[@]}" download --no-cache-dir --no-deps --no-binary :all: --no-build-isolation \
    -d "$work" "mmcv==${MMCV_VERSION}"
tar -xzf "$work/mmcv-${MMCV_VERSION}.tar.gz" -C "$work"
src="$work/mmcv-${MMCV_VERSION}"
if ! grep -q -- '-std=c++17' "$src/setup.py"; then
    echo "[install_mmcv] expected '-std=c++17' in mmcv's setup.py; layout changed, refusing to guess" >&2
    exit 1
fi
# torch >= 2.10 headers use C++20 features; mmcv 2.1.0 predates that.
sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" wheel --no-cache-dir --no-deps \
    --no-build-isolation -w "$work/dist" "$src"
"${PIP[@]}" install --no-cache-dir --no-deps "$work"/dist/mmcv-${MMCV_VERSION}-*.whl
"${PIP[@]}" install "${MMCV_DEPS[@]}"
check_ops
touch "$stamp"
echo "[install_mmcv] done"
