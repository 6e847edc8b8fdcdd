#!/usr/bin/env bash
# Install mmcv 2.1.0 *with its compiled ops* into the Python environment of $PYTHON.
#
# mmcv 2.1.0 publishes no wheel for torch 2.14, so it is built from the PyPI sdist:
#   * torch must already be installed and the build must see it: --no-build-isolation;
#   * mmcv's setup.py imports pkg_resources: setuptools>=77,<81 (81 removed it);
#   * MMCV_WITH_OPS=1 compiles the C++ ops (nms, RoIAlign, ...); with a CUDA build of
#     torch and nvcc present also their CUDA kernels (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST
#     from the visible GPUs, else 7.5 to 9.0), checked on the GPU when one is visible;
#   * mmcv's setup.py hard-codes -std=c++17, but the headers of torch >= 2.10 need
#     C++20, so for those the flag is raised in the unpacked sdist before building.
# The build takes 15-30 min on 2 cores. To reuse a wheel of exactly this build, name a
# directory holding it in MMSFR_WHEEL_DIR; the wheel is only kept if its ops load
# against the installed torch, otherwise the script builds from source.
# pip's wheel cache is keyed by sdist, not by torch version, so every mmcv step runs
# with --no-cache-dir: a wheel built against another torch is never picked up.
#
# Usage: PYTHON=.venv/bin/python [MMSFR_WHEEL_DIR=dir] [MMSFR_MMCV_DEVICE=cpu|cuda] \
#            tools/install_mmcv.sh
set -euo pipefail

PYTHON=${PYTHON:-python}
MMCV_VERSION=2.1.0
PIP=("$PYTHON" -m pip)
# mmcv 2.1.0's runtime requirements (installed explicitly because mmcv itself is --no-deps).
MMCV_DEPS=(addict "mmengine>=0.3.0" numpy packaging Pillow pyyaml yapf "opencv-python>=3")

torch_version=$("$PYTHON" -c 'import torch; print(torch.__version__)')
torch_cuda=$("$PYTHON" -c 'import torch; print(torch.version.cuda or "")')
gpus=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')

# CPU or CUDA ops. mmcv compiles its CUDA ops only when torch.cuda.is_available() at
# build time or FORCE_CUDA=1. This script builds them (FORCE_CUDA=1) where a GPU is
# visible, torch is a CUDA build and nvcc is present; MMSFR_MMCV_DEVICE=cuda does so
# on a build host without a GPU (with FORCE_CUDA=1 set, likewise), and
# MMSFR_MMCV_DEVICE=cpu builds CPU ops only.
nvcc=""
if [[ -n "${CUDA_HOME:-}" && -x "${CUDA_HOME}/bin/nvcc" ]]; then
    nvcc="${CUDA_HOME}/bin/nvcc"
elif command -v nvcc >/dev/null 2>&1; then
    nvcc=$(command -v nvcc)
fi
device=${MMSFR_MMCV_DEVICE:-}
if [[ -z "$device" ]]; then
    device=cpu
    if [[ "$gpus" != 0 || "${FORCE_CUDA:-0}" == 1 ]] && [[ -n "$torch_cuda" && -n "$nvcc" ]]; then
        device=cuda
    fi
fi
case "$device" in
    cpu) ;;
    cuda)
        if [[ -z "$torch_cuda" || -z "$nvcc" ]]; then
            echo "[install_mmcv] CUDA ops need a CUDA build of torch (torch.version.cuda=${torch_cuda:-None}) and nvcc (found: ${nvcc:-none}; set CUDA_HOME)" >&2
            exit 1
        fi ;;
    *) echo "[install_mmcv] MMSFR_MMCV_DEVICE=$device: choose cpu or cuda" >&2; exit 2 ;;
esac
if [[ "$device" == cpu && "$gpus" != 0 ]]; then
    echo "[install_mmcv] $gpus GPU(s) visible, but mmcv would get no CUDA ops (torch.version.cuda=${torch_cuda:-None}, nvcc: ${nvcc:-none}, MMSFR_MMCV_DEVICE=${MMSFR_MMCV_DEVICE:-auto}); mmdet would fail at its first NMS on the GPU. Install the CUDA toolkit of torch's CUDA (or set CUDA_HOME) and rerun" >&2
    exit 1
fi

stamp_dir=$("$PYTHON" -c 'import sys; print(sys.prefix)')
stamp="$stamp_dir/.mmcv-${MMCV_VERSION}-built-for-torch-${torch_version}-${device}"

check_ops() {
    # Loads the compiled extension and runs nms + roi_align on CPU, and on CUDA when a
    # GPU is visible (a CPU-only mmcv is refused there): fails on ABI mismatch.
    "$PYTHON" tools/misc/check_mmcv_ops.py --expect-version "$MMCV_VERSION"
}

if [[ -f "$stamp" ]] && check_ops >/dev/null 2>&1; then
    echo "[install_mmcv] mmcv ${MMCV_VERSION} with ${device} ops already installed for torch ${torch_version}"
    exit 0
fi

"${PIP[@]}" uninstall -y mmcv mmcv-lite mmcv-full >/dev/null 2>&1 || true

if [[ "$device" == cpu && -n "${MMSFR_WHEEL_DIR:-}" ]] && ls "${MMSFR_WHEEL_DIR}"/mmcv-${MMCV_VERSION}-*.whl >/dev/null 2>&1; then
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
echo "[install_mmcv] building mmcv ${MMCV_VERSION} with ${device} ops from source against torch ${torch_version} (15-30 min on 2 cores for CPU ops; CUDA ops take longer)"
"${PIP[@]}" download --no-cache-dir --no-deps --no-binary :all: --no-build-isolation \
    -d "$work" "mmcv==${MMCV_VERSION}"
tar -xzf "$work/mmcv-${MMCV_VERSION}.tar.gz" -C "$work"
src="$work/mmcv-${MMCV_VERSION}"
# torch >= 2.10 headers use C++20 features; mmcv 2.1.0 predates that and asks for C++17,
# which older torch releases (2.1 ... 2.9) build with unchanged.
if "$PYTHON" -c 'import sys, torch; v = tuple(map(int, torch.__version__.split(".")[:2])); sys.exit(v < (2, 10))'; then
    if ! grep -q -- '-std=c++17' "$src/setup.py"; then
        echo "[install_mmcv] expected '-std=c++17' in mmcv's setup.py; layout changed, refusing to guess" >&2
        exit 1
    fi
    # The flag is raised for the host compiler and for nvcc alike (torch's headers are
    # compiled by both); nvcc accepts -std=c++20 from CUDA 12 on.
    sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    if [[ "$device" == cuda ]]; then
        nvcc_major=$("$nvcc" --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
        if [[ -z "$nvcc_major" || "$nvcc_major" -lt 12 ]]; then
            echo "[install_mmcv] torch ${torch_version} needs C++20, which nvcc ${nvcc_major:-?} ($nvcc) lacks: use CUDA >= 12" >&2
            exit 1
        fi
    fi
fi
cuda_env=()
if [[ "$device" == cuda ]]; then
    # Kernels for the visible GPUs, or for the common data-centre and desktop GPUs
    # (Turing to Hopper) on a build host without one; TORCH_CUDA_ARCH_LIST overrides.
    arch_list=${TORCH_CUDA_ARCH_LIST:-$("$PYTHON" -c 'import torch
caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())} if torch.cuda.is_available() else set()
print(";".join(f"{a}.{b}" for a, b in sorted(caps)))')}
    arch_list=${arch_list:-7.5;8.0;8.6;8.9;9.0+PTX}
    echo "[install_mmcv] CUDA ops for TORCH_CUDA_ARCH_LIST=${arch_list} with $nvcc"
    cuda_env=(FORCE_CUDA=1 "TORCH_CUDA_ARCH_LIST=${arch_list}" "CUDA_HOME=${CUDA_HOME:-$(dirname "$(dirname "$nvcc")")}")
fi
env "${cuda_env[@]}" MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" wheel --no-cache-dir --no-deps \
    --no-build-isolation -w "$work/dist" "$src"
"${PIP[@]}" install --no-cache-dir --no-deps "$work"/dist/mmcv-${MMCV_VERSION}-*.whl
"${PIP[@]}" install "${MMCV_DEPS[@]}"
check_ops
touch "$stamp"
echo "[install_mmcv] done"
