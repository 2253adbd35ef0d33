#!/usr/bin/env bash
# The real-fleet integration tests against the llama.cpp build a bundle ships: llama-cpp-python
# built portable (GGML_NATIVE=OFF, AVX-512 off: on x86-64 that is AVX2/FMA/F16C), not tuned
# to this CPU like the build `pip install` makes for .venv.
#
#   scripts/test-portable.sh [PYTEST-ARGS]        # build once (cached), the integration tests
#   scripts/test-portable.sh --all [PYTEST-ARGS]  # the whole suite
#
# 1. The wheel: the same llama-cpp-python version as .venv's, from its sdist, built with
#    `pip wheel --no-cache-dir --no-binary llama-cpp-python` into
#    $CALM_PORTABLE_WHEELS (default ${XDG_CACHE_HOME:-~/.cache}/calm-edge/wheels/
#    portable-<version>-<python>-<arch>), kept there with the CMAKE_ARGS it was built with.
#    Never through pip's wheel cache: it is keyed on the sdist, not on CMAKE_ARGS, and would
#    hand back the native wheel built for .venv. A cached wheel is reused while the version,
#    Python, architecture and CMAKE_ARGS match; set CALM_PORTABLE_REBUILD=1 to rebuild.
# 2. .venv-portable: that wheel, then the project editable with the test extras that
#    scripts/test.sh installs, every other package pinned to .venv's versions.
# 3. llama.cpp's system info (the build under test: no AVX512 in it), then pytest
#    (-m integration: the real default fleet, which scripts/test.sh pulls; --all: everything).
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/python ] || { echo "test-portable: no .venv; run scripts/test.sh first" >&2; exit 1; }
VERSION=$(.venv/bin/python -c 'from importlib.metadata import version; print(version("llama_cpp_python"))')
PYTAG=$(.venv/bin/python -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
ARCH=$(uname -m)
CMAKE="-DGGML_NATIVE=OFF -DGGML_AVX512=OFF"
WHEELS=${CALM_PORTABLE_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/calm-edge/wheels/portable-$VERSION-$PYTAG-$ARCH}

wheel() { compgen -G "$WHEELS/llama_cpp_python-$VERSION-*.whl" | head -n1; }
if [ "${CALM_PORTABLE_REBUILD:-0}" = 1 ] || [ -z "$(wheel)" ] ||
   [ "$(cat "$WHEELS/CMAKE_ARGS" 2>/dev/null)" != "$CMAKE" ]; then
  rm -rf "$WHEELS" "$WHEELS.tmp"
  mkdir -p "$WHEELS"
  echo "==> building llama-cpp-python $VERSION portable (CMAKE_ARGS=$CMAKE; ~6 min on 2 cores)"
  start=$SECONDS
  CMAKE_ARGS=$CMAKE .venv/bin/python -m pip wheel -q --no-cache-dir --no-deps \
    --no-binary llama-cpp-python "llama-cpp-python==$VERSION" -w "$WHEELS.tmp"
  mv "$WHEELS.tmp"/llama_cpp_python-*.whl "$WHEELS"/ && rmdir "$WHEELS.tmp"
  echo "$CMAKE" >"$WHEELS/CMAKE_ARGS"
  echo "==> built in $((SECONDS - start)) s: $(wheel)"
else
  echo "==> portable llama-cpp-python $VERSION from $(wheel)"
fi

[ -x .venv-portable/bin/python ] || .venv/bin/python -m venv .venv-portable
PINS=.venv-portable/pins.txt
.venv/bin/python -m pip freeze --exclude-editable | grep -iv '^llama[-_]cpp[-_]python' >"$PINS"
.venv-portable/bin/python -m pip install -q --disable-pip-version-check --force-reinstall \
  --no-deps "$(wheel)"
.venv-portable/bin/python -m pip install -q --disable-pip-version-check -c "$PINS" \
  -e '.[dev,tflite,onnx,bench]'

INFO=$(.venv-portable/bin/python -c 'import llama_cpp; print(llama_cpp.llama_print_system_info().decode())')
echo "==> llama.cpp under test (portable, $CMAKE): $INFO"
if [[ $INFO == *"AVX512 = 1"* ]]; then
  echo "test-portable: .venv-portable's llama.cpp uses AVX-512: not the portable build" >&2
  exit 1
fi

REQUIRE=${CALM_TEST_REQUIRE_MODELS:-all}
if [ "$REQUIRE" = all ]; then
  .venv-portable/bin/calm-edge models pull -q
else
  IFS=, read -r -a NAMES <<<"$REQUIRE"
  .venv-portable/bin/calm-edge models pull -q "${NAMES[@]}"
fi
if [ "${1:-}" = --all ]; then shift; else set -- -m integration "$@"; fi
CALM_TEST_REQUIRE_MODELS=$REQUIRE .venv-portable/bin/python -m pytest "$@"
