#!/usr/bin/env bash
# GPU check for any machine with CUDA: build llama-cpp-python with CUDA from its sdist, then
# run scripts/gpu_check.py (the daemon against raw llama-cpp-python on a random model, GPU
# memory after an unload, the budget accounting of offloaded layers).
#
#   scripts/gpu_check.sh [--arch 87] [--sdist FILE] [--wheelhouse DIR] [--out DIR]
#                        [--fa on|off] [--skip-build] [--offline] [-- gpu_check.py options]
#
#   --arch A        CUDA architectures (CMAKE_CUDA_ARCHITECTURES): 87 for Jetson Orin,
#                   90-real for an H100/H200, 89 for an L4/RTX 40xx (default: 87)
#   --sdist FILE    llama-cpp-python sdist (default: pip downloads llama-cpp-python==0.3.36).
#                   To fit a small transfer, strip it first: remove vendor/llama.cpp/{docs,
#                   models,benches,tools/ui} and .git (~7 MB left)
#   --wheelhouse D  offline: take the build and Python dependencies only from this directory
#                   (scikit-build-core, cmake, ninja, numpy, gguf, httpx, ...)
#   --out DIR       where gpu_check.json and serve.log go (default gpu-check-results)
#   --fa on|off     build the flash-attention kernels (off builds in ~200 s instead of ~350 s
#                   on 16 cores; the check runs with flash_attn = false either way)
#   --skip-build    use the llama-cpp-python already in .gpu-venv (or .gpu-site)
#   --offline       a machine with no package index whose python3 already has the build
#                   tools (scikit-build-core, cmake, ninja) and the check's needs (numpy,
#                   gguf, httpx, h11, prometheus-client, jinja2, diskcache; extra ones can
#                   come on PYTHONPATH): no venv, no downloads; the build goes into
#                   .gpu-site with --no-build-isolation and calm_edge runs from this tree
#
# The build is portable across CPUs (GGML_NATIVE=OFF) and bypasses pip's wheel cache, which
# would otherwise hand back a CPU build made earlier from the same sdist.
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH=87
SDIST=
HOUSE=
OUT=gpu-check-results
FA=off
BUILD=1
OFFLINE=0
while [ $# -gt 0 ]; do
    case $1 in
        --arch) ARCH=${2:?}; shift ;;
        --sdist) SDIST=${2:?}; shift ;;
        --wheelhouse) HOUSE=${2:?}; shift ;;
        --out) OUT=${2:?}; shift ;;
        --fa) FA=${2:?}; shift ;;
        --skip-build) BUILD=0 ;;
        --offline) OFFLINE=1 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
command -v nvidia-smi >/dev/null || { echo "gpu_check.sh: no nvidia-smi: not a CUDA machine" >&2; exit 2; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

PIP_SRC=()
[ -z "$HOUSE" ] || PIP_SRC=(--no-index --find-links "$HOUSE")
if [ "$OFFLINE" = 1 ]; then
    PY=python3
    SITE=$PWD/.gpu-site
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    [ -n "$SDIST" ] || { echo "gpu_check.sh: --offline needs --sdist FILE" >&2; exit 2; }
else
    PY=.gpu-venv/bin/python
    [ -x "$PY" ] || python3 -m venv .gpu-venv
    "$PY" -m pip install -q --disable-pip-version-check ${PIP_SRC[@]+"${PIP_SRC[@]}"} numpy gguf httpx
fi

if [ "$BUILD" = 1 ]; then
    case $FA in on) fa=ON ;; off) fa=OFF ;; *) echo "--fa on|off" >&2; exit 2 ;; esac
    export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DGGML_CUDA_FA=$fa"
    export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
    echo "building llama-cpp-python with CUDA (arch $ARCH, flash attention $FA) ..."
    t0=$(date +%s)
    if [ "$OFFLINE" = 1 ]; then
        wheels=$(mktemp -d)
        "$PY" -m pip wheel -q --disable-pip-version-check --no-cache-dir --no-deps \
            --no-build-isolation --no-index -w "$wheels" "$SDIST"
        rm -rf "$SITE"
        "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps \
            --target "$SITE" "$wheels"/*.whl
    else
        "$PY" -m pip install -q --disable-pip-version-check --no-cache-dir --force-reinstall \
            --no-deps ${PIP_SRC[@]+"${PIP_SRC[@]}"} "${SDIST:-llama-cpp-python==0.3.36}"
    fi
    echo "built in $(( $(date +%s) - t0 )) s"
fi
[ "$OFFLINE" = 1 ] || "$PY" -m pip install -q --disable-pip-version-check --no-deps -e .
"$PY" -c 'import llama_cpp; assert llama_cpp.llama_supports_gpu_offload(), "this llama-cpp-python has no GPU offload"'
PYTHONUNBUFFERED=1 "$PY" scripts/gpu_check.py --out "$OUT" "$@"
