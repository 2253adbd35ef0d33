#!/usr/bin/env bash
# Build an offline install bundle on a connected machine, for a target platform and Python.
# Install it on the device with BUNDLE/scripts/install-offline.sh BUNDLE. See docs/service.md.
#
#   build-bundle.sh [--out DIR] [--platform TAG]... [--python-version X.Y]
#                   [--extras LIST] [--extra-wheel WHEEL]... [--models NAMES | --no-models]
#                   [--added NAMES|all [--added-from MODELS_DIR]]
#
# The bundle:
#   wheels/       the calm-edge wheel, its dependencies for the target (with --extras,
#                 default "tflite": the classifier runtime), every --extra-wheel, and the
#                 model packages of models/fleet.toml (read with calm_edge.fleet)
#   fleet.toml    the manifest the models were taken from
#   added/        with --added: models added with `calm-edge models add` here, their GGUF
#                 files and their local manifest (fleet.local.toml), from
#                 `calm-edge models export`
#   scripts/      install-offline.sh, install-service.sh, systemd/ units and drop-ins
#   docs/         service.md
#   BUNDLE-INFO   what was built for (KEY=VALUE)
#   SHA256SUMS    sha256sum of every other file; install-offline.sh refuses a bundle whose
#                 files differ from it, are missing, or are not listed in it
#
# llama-cpp-python publishes no binary wheels for most targets: build one for the target
# (on the device, or in a container matching its OS, Python and CUDA). --build-llama builds
# it here, for this machine's architecture, portable across CPUs of that architecture
# (GGML_NATIVE=OFF: a native build can crash or change answers on another CPU). On a Jetson:
#   build-bundle.sh --build-llama --llama-cmake-args "-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=87"
# or build the wheel yourself, e.g.
#   CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=87 -DGGML_NATIVE=OFF" \
#     pip wheel --no-cache-dir --no-deps llama-cpp-python==0.3.36 -w wheelhouse/
# (--no-cache-dir: pip's wheel cache would hand back an earlier build whatever the flags)
# and pass it with --extra-wheel wheelhouse/llama_cpp_python-0.3.36-*.whl.
#
# Options:
#   --out DIR             bundle directory (default dist/calm-edge-bundle-VERSION-TARGET)
#   --platform TAG        the target's newest wheel platform, repeatable:
#                         manylinux_2_31_aarch64 (JetPack 5), manylinux_2_35_aarch64
#                         (JetPack 6), manylinux_2_36_aarch64 (Raspberry Pi OS 12),
#                         manylinux2014_x86_64 ... (default: this machine); older
#                         manylinux tags and linux_<arch> are accepted too
#   --python-version X.Y  target Python (default: this one); JetPack 5 and 6 ship 3.8/3.10,
#                         calm-edge needs >= 3.10
#   --extras LIST         calm-edge extras to include, comma-separated (default tflite;
#                         add jetson for jtop, onnx for ONNX Runtime; "" for none)
#   --extra-wheel WHEEL   a prebuilt wheel to include and to satisfy dependencies with
#   --build-llama         build llama-cpp-python here (this architecture; portable:
#                         GGML_NATIVE=OFF) and include it
#   --llama-cmake-args A  more CMAKE_ARGS for --build-llama (e.g. CUDA, see above)
#   --llama-native        build for this very CPU (GGML_NATIVE=ON): only for a bundle that
#                         runs on the machine that builds it
#   --models NAMES        comma-separated fleet models to include (default: all)
#   --no-models           no model packages
#   --fleet FILE          another fleet manifest (also set CALM_EDGE_FLEET on the device)
#   --added NAMES         comma-separated models added with `calm-edge models add` to carry
#                         (their GGUF files, checked against their SHA-256), or "all"
#   --added-from DIR      the models directory they were added to (default: calm-edge's
#                         default models directory for this user)
#   --project-wheel WHEEL use this calm-edge wheel instead of building one from the sources
#   --no-deps             leave out the dependencies (they must come from --extra-wheel)
#   --find-links DIR      also look for packages in DIR (passed to pip)
#   --no-index            do not use PyPI (with --find-links: build from a local mirror)
#   --python PY           interpreter that runs pip and reads the fleet (default: the
#                         project's .venv/bin/python, else python3)
#   --force               replace an existing --out directory
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$SCRIPT_DIR/.." && pwd)

OUT=
PLATFORMS=()
PYVER=
EXTRAS=tflite
EXTRA_WHEELS=()
BUILD_LLAMA=0
LLAMA_CMAKE_ARGS=
LLAMA_NATIVE=0
LLAMA_VERSION=0.3.36
MODELS=
NO_MODELS=0
FLEET=
ADDED=
ADDED_FROM=
PROJECT_WHEEL=
NO_DEPS=0
PIP_SOURCE=()
PY=
FORCE=0

say() { printf 'build-bundle: %s\n' "$*"; }
die() { printf 'build-bundle: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case $1 in
        --out) OUT=${2:?}; shift ;;
        --platform) PLATFORMS+=("${2:?}"); shift ;;
        --python-version) PYVER=${2:?}; shift ;;
        --extras) EXTRAS=$2; shift ;;
        --extra-wheel) EXTRA_WHEELS+=("${2:?}"); shift ;;
        --build-llama) BUILD_LLAMA=1 ;;
        --llama-cmake-args) LLAMA_CMAKE_ARGS=$2; shift ;;
        --llama-native) LLAMA_NATIVE=1 ;;
        --models) MODELS=${2:?}; shift ;;
        --no-models) NO_MODELS=1 ;;
        --fleet) FLEET=${2:?}; shift ;;
        --added) ADDED=${2:?}; shift ;;
        --added-from) ADDED_FROM=${2:?}; shift ;;
        --project-wheel) PROJECT_WHEEL=${2:?}; shift ;;
        --no-deps) NO_DEPS=1 ;;
        --find-links) PIP_SOURCE+=(--find-links "${2:?}"); shift ;;
        --no-index) PIP_SOURCE+=(--no-index) ;;
        --python) PY=${2:?}; shift ;;
        --force) FORCE=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

if [ -z "$PY" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PY=$REPO/.venv/bin/python; else PY=python3; fi
fi
"$PY" -c 'import calm_edge' 2>/dev/null ||
    die "$PY cannot import calm_edge (needed to read the fleet): pip install -e . first, or pass --python"
[ -n "$PYVER" ] || PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[[ $PYVER =~ ^3\.[0-9]+$ ]] || die "--python-version: expected 3.X, got $PYVER"
for w in ${EXTRA_WHEELS[@]+"${EXTRA_WHEELS[@]}"} ${PROJECT_WHEEL:+"$PROJECT_WHEEL"}; do
    if ! [ -f "$w" ] || [[ $w != *.whl ]]; then die "not a wheel file: $w"; fi
done

TARGET=${PLATFORMS[0]:-native}
VERSION=$("$PY" -c 'import calm_edge; print(calm_edge.__version__)')
[ -n "$OUT" ] || OUT=$REPO/dist/calm-edge-bundle-$VERSION-$TARGET-py$PYVER
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
    [ "$FORCE" = 1 ] || die "$OUT exists and is not empty (--force replaces it)"
    rm -rf "$OUT"
fi
mkdir -p "$OUT/wheels"
OUT=$(cd "$OUT" && pwd)
W=$OUT/wheels

# pip arguments that select wheels for the target instead of this machine. pip matches
# --platform tags literally, so a glibc level is expanded into every older manylinux tag
# (manylinux_2_35_aarch64 also accepts manylinux_2_28 and manylinux2014 wheels), plus
# linux_<arch>: the tag of a wheel built on the device with pip wheel (PyPI refuses such
# wheels, so only --extra-wheel and --find-links supply them).
expand_platform() {
    local tag=$1 arch glibc floor y
    case $tag in
        manylinux1_*) arch=${tag#manylinux1_}; glibc=5 ;;
        manylinux2010_*) arch=${tag#manylinux2010_}; glibc=12 ;;
        manylinux2014_*) arch=${tag#manylinux2014_}; glibc=17 ;;
        manylinux_2_*) arch=${tag#manylinux_2_*_}; glibc=${tag#manylinux_2_}; glibc=${glibc%%_*} ;;
        *) echo "$tag"; return ;;
    esac
    case $arch in x86_64|i686) floor=5 ;; *) floor=17 ;; esac
    for ((y = glibc; y >= floor; y--)); do
        echo "manylinux_2_${y}_$arch"
        case $y in 17) echo "manylinux2014_$arch" ;; 12) echo "manylinux2010_$arch" ;;
                    5) echo "manylinux1_$arch" ;; esac
    done
    echo "linux_$arch"
}
target_args=(--only-binary=:all: --python-version "$PYVER")
if [ ${#PLATFORMS[@]} -gt 0 ]; then
    target_args+=(--implementation cp)
    while IFS= read -r p; do target_args+=(--platform "$p"); done < <(
        for p in "${PLATFORMS[@]}"; do expand_platform "$p"; done | awk '!seen[$0]++')
fi
pip_q=(--disable-pip-version-check -q)

# 1. The project wheel.
if [ -n "$PROJECT_WHEEL" ]; then
    cp "$PROJECT_WHEEL" "$W/"
else
    say "building the calm-edge wheel"
    "$PY" -m pip wheel "${pip_q[@]}" --no-deps ${PIP_SOURCE[@]+"${PIP_SOURCE[@]}"} -w "$W" "$REPO"
fi
shopt -s nullglob
project=("$W"/calm_edge-*.whl)
shopt -u nullglob
[ ${#project[@]} = 1 ] || die "expected one calm_edge wheel in $W, found ${#project[@]}"
PROJECT_VERSION=$(basename "${project[0]}" | cut -d- -f2)

# 2. Prebuilt wheels (llama-cpp-python for the target): pip resolves against them first.
for w in ${EXTRA_WHEELS[@]+"${EXTRA_WHEELS[@]}"}; do cp "$w" "$W/"; done
if [ "$BUILD_LLAMA" = 1 ]; then
    arch=$(uname -m)
    for p in ${PLATFORMS[@]+"${PLATFORMS[@]}"}; do
        [[ $p == *"$arch" ]] || die "--build-llama builds for this machine ($arch), not $p:
  build on the target (or a container of its architecture) and pass --extra-wheel"
    done
    native=OFF
    [ "$LLAMA_NATIVE" = 0 ] || native=ON
    say "building llama-cpp-python $LLAMA_VERSION (GGML_NATIVE=$native $LLAMA_CMAKE_ARGS; minutes)"
    CMAKE_ARGS="-DGGML_NATIVE=$native $LLAMA_CMAKE_ARGS" "$PY" -m pip wheel "${pip_q[@]}" \
        --no-cache-dir --no-deps ${PIP_SOURCE[@]+"${PIP_SOURCE[@]}"} -w "$W" \
        "llama-cpp-python==$LLAMA_VERSION"
fi

# 3. Dependencies for the target.
req=${project[0]}
[ -z "$EXTRAS" ] || req="${project[0]}[$EXTRAS]"
if [ "$NO_DEPS" = 0 ]; then
    say "downloading dependencies for Python $PYVER on ${PLATFORMS[*]:-this machine}"
    if ! "$PY" -m pip download "${pip_q[@]}" "${target_args[@]}" --find-links "$W" \
            ${PIP_SOURCE[@]+"${PIP_SOURCE[@]}"} -d "$W" "$req"; then
        die "pip could not get every dependency as a wheel for the target. llama-cpp-python
  publishes no wheels for most targets: --build-llama (this architecture), or build it for
  the target and pass --extra-wheel llama_cpp_python-VERSION-....whl (see --help)"
    fi
fi

# 4. Model packages, from the fleet manifest as the project parses it.
if [ -n "$FLEET" ]; then
    [ -f "$FLEET" ] || die "--fleet $FLEET: no such file"
    FLEET_SRC=$FLEET
else
    FLEET_SRC=$("$PY" -c 'from calm_edge.paths import fleet_path; print(fleet_path(""))')
fi
cp "$FLEET_SRC" "$OUT/fleet.toml"
MODEL_NAMES=
if [ "$NO_MODELS" = 0 ]; then
    # Output: the model names on the first line (comma-separated), then one pinned
    # requirement per line.
    # shellcheck disable=SC2016
    listing=$("$PY" -c '
import sys
from pathlib import Path
from calm_edge.fleet import load_fleet
fleet = load_fleet(Path(sys.argv[1]))
wanted = [n for n in sys.argv[2].split(",") if n]
unknown = [n for n in wanted if fleet.get(n) is None]
if unknown:
    sys.exit(f"build-bundle: error: unknown model(s) {unknown}; the fleet has "
             f"{[m.name for m in fleet.models]}")
chosen = [m for m in fleet.models if not wanted or m.name in wanted]
print(",".join(m.name for m in chosen if m.source))
for m in chosen:
    if m.source is None:
        print(f"build-bundle: {m.name} has no [model.source]; copy {m.file} by hand",
              file=sys.stderr)
    else:
        print(*m.source.packages, sep="\n")
' "$OUT/fleet.toml" "$MODELS") || die "could not read $FLEET_SRC"
    MODEL_NAMES=$(head -n 1 <<< "$listing")
    mapfile -t packages < <(tail -n +2 <<< "$listing")
    if [ ${#packages[@]} -gt 0 ]; then
        say "downloading the model packages for: $MODEL_NAMES"
        # Containers for bytes: no dependencies, and any platform (they are py3-none-any).
        "$PY" -m pip download "${pip_q[@]}" --no-deps --only-binary=:all: \
            ${PIP_SOURCE[@]+"${PIP_SOURCE[@]}"} -d "$W" "${packages[@]}"
    fi
fi

# 4b. Models the user added, as `calm-edge models export` writes them (verified first).
ADDED_NAMES=
if [ -n "$ADDED" ]; then
    export_args=(models export "$OUT/added")
    if [ "$ADDED" != all ]; then
        IFS=, read -r -a added_names <<< "$ADDED"
        export_args+=("${added_names[@]}")
    fi
    [ -z "$ADDED_FROM" ] || export_args+=(--models-dir "$ADDED_FROM")
    say "exporting added models ($ADDED)"
    "$PY" -m calm_edge.cli "${export_args[@]}" || die "could not export the added models"
    ADDED_NAMES=$("$PY" -c '
import sys
from pathlib import Path
from calm_edge.fleet import read_local_models
print(",".join(m.name for m in read_local_models(Path(sys.argv[1]))))
' "$OUT/added/fleet.local.toml") || die "could not read $OUT/added/fleet.local.toml"
    [ -n "$ADDED_NAMES" ] || die "--added $ADDED: there are no added models to carry"
fi

# 5. The installers, the units and the documentation.
install -d "$OUT/scripts/systemd" "$OUT/docs"
install -m 0755 "$SCRIPT_DIR/install-offline.sh" "$SCRIPT_DIR/install-service.sh" "$OUT/scripts/"
install -m 0644 "$SCRIPT_DIR"/systemd/* "$OUT/scripts/systemd/"
if [ -f "$REPO/docs/service.md" ]; then install -m 0644 "$REPO/docs/service.md" "$OUT/docs/"; fi

has_llama=no
compgen -G "$W/llama_cpp_python-*.whl" >/dev/null && has_llama=yes
cat > "$OUT/BUNDLE-INFO" <<EOF
calm_edge_version=$PROJECT_VERSION
python_version=$PYVER
platforms=${PLATFORMS[*]:-native}
extras=$EXTRAS
models=$MODEL_NAMES
added_models=$ADDED_NAMES
dependencies=$([ "$NO_DEPS" = 0 ] && echo included || echo "left out (--no-deps)")
llama_cpp_python_wheel=$has_llama
llama_cpp_python_build=$([ "$BUILD_LLAMA" = 1 ] && echo "built here: GGML_NATIVE=$([ "$LLAMA_NATIVE" = 1 ] && echo ON || echo OFF) $LLAMA_CMAKE_ARGS" || echo "not built here")
EOF

# 6. The manifest: every file but itself, relative paths, sorted.
(cd "$OUT" && find . -type f ! -path ./SHA256SUMS -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 sha256sum -- > SHA256SUMS)
(cd "$OUT" && sha256sum --check --strict --quiet SHA256SUMS) || die "manifest self-check failed"

count=$(wc -l < "$OUT/SHA256SUMS")
say "bundle ready: $OUT ($count files, $(du -sh "$OUT" | cut -f1))"
say "manifest checksum: $(sha256sum "$OUT/SHA256SUMS" | cut -d' ' -f1)"
say "  (check it on the device with sha256sum BUNDLE/SHA256SUMS before installing)"
if [ "$has_llama" = no ]; then
    say "note: no llama-cpp-python wheel in the bundle; the device must get one (--extra-wheel)"
fi
