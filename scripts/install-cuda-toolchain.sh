#!/usr/bin/env bash
# Installs the toolchain that builds the native CUDA kernels (feature `cuda-native`) on any
# x86_64 Linux machine, no GPU and no system CUDA needed: nvcc 13.0 and the CUTLASS/CuTe 4.2
# headers, both from PyPI, into a Python venv (default: .cuda-venv at the repository root,
# git-ignored; override with BURN_NATTEN_CUDA_VENV). ~110 MB download, ~20 s.
#
# build.rs finds this venv by itself; to use it from a shell, `source` the env file it writes:
#   bash scripts/install-cuda-toolchain.sh && source .cuda-venv/env.sh
#
# Stay on CUDA 13.0.x: the GPU machines run driver 580 (CUDA 13.0), which cannot JIT the PTX of a
# newer toolkit.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${BURN_NATTEN_CUDA_VENV:-$PWD/.cuda-venv}"

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; then
        SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check "cuda-toolkit[nvcc,cudart,cccl,crt,nvvm]==13.0.2"
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps nvidia-cutlass==4.2.0.0

SP="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
cat > "$VENV/env.sh" <<ENV
export NVCC="$SP/nvidia/cu13/bin/nvcc"
export CUTLASS_INCLUDE="$SP/cutlass_library/source/include"
export CUDARC_CUDA_VERSION=13000
ENV
"$SP/nvidia/cu13/bin/nvcc" --version | tail -2
echo "CUTLASS headers: $SP/cutlass_library/source/include"
echo "toolchain ready in $VENV (source $VENV/env.sh to export NVCC and CUTLASS_INCLUDE)"
