#!/usr/bin/env bash
# Install calm-edge from an offline bundle made by build-bundle.sh: no network needed.
#
#   install-offline.sh BUNDLE_DIR [--venv DIR] [--python PY] [--models-dir DIR]
#                      [--user NAME] [--no-models] [--verify-only]
#
# 1. Verifies the bundle against BUNDLE_DIR/SHA256SUMS, and refuses to go on if any listed
#    file is missing or differs (corrupt or tampered), if the manifest names a path outside
#    the bundle, or if the bundle holds a file the manifest does not list (pip would pick
#    up an unlisted wheel, so "extra" files are refused too).
# 2. Creates the venv (default /opt/calm-edge/venv) with PY (default python3, which must be
#    the Python the bundle was built for), or reuses it, and runs
#    pip install --no-index --find-links BUNDLE_DIR/wheels calm-edge[EXTRAS]==VERSION.
# 3. Assembles and verifies the bundled models with
#    calm-edge models pull --wheelhouse BUNDLE_DIR/wheels into --models-dir
#    (default /var/lib/calm-edge/models, the service's state directory), and adds the
#    models the bundle carries in added/ (build-bundle.sh --added) with
#    calm-edge models import BUNDLE_DIR/added (SHA-256 and llama.cpp checks, local manifest
#    <models-dir>/fleet.local.toml). As root, both run as the service user (--user,
#    default calm-edge, created as install-service.sh does if missing) with runuser, into a
#    models directory that user owns: a link planted there cannot make it write where root
#    could. The bundle must be readable by that user.
# Then run BUNDLE_DIR/scripts/install-service.sh --venv DIR to install the service.
#
# The manifest catches corruption and tampering with the files, not a manifest replaced
# along with them: compare `sha256sum BUNDLE_DIR/SHA256SUMS` with the value printed by
# build-bundle.sh (or sign SHA256SUMS) when the transport is not trusted.
# CALM_INSTALL_RUNUSER names a runuser-compatible command to use instead of runuser (tests).
set -euo pipefail

VENV=/opt/calm-edge/venv
PY=python3
MODELS_DIR=/var/lib/calm-edge/models
SERVICE_USER=calm-edge
NO_MODELS=0
VERIFY_ONLY=0
BUNDLE=

say() { printf 'install-offline: %s\n' "$*"; }
die() { printf 'install-offline: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case $1 in
        --venv) VENV=${2:?}; shift ;;
        --python) PY=${2:?}; shift ;;
        --models-dir) MODELS_DIR=${2:?}; shift ;;
        --user) SERVICE_USER=${2:?}; shift ;;
        --no-models) NO_MODELS=1 ;;
        --verify-only) VERIFY_ONLY=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option: $1 (see --help)" ;;
        *) [ -z "$BUNDLE" ] || die "one bundle directory only"; BUNDLE=$1 ;;
    esac
    shift
done
[ -n "$BUNDLE" ] || die "usage: install-offline.sh BUNDLE_DIR [options] (see --help)"
[ -d "$BUNDLE" ] || die "$BUNDLE: no such directory"
BUNDLE=$(cd "$BUNDLE" && pwd)
MANIFEST=$BUNDLE/SHA256SUMS

# -- 1. verify ---------------------------------------------------------------------------
[ -s "$MANIFEST" ] || die "$MANIFEST is missing or empty: not a calm-edge bundle"
listed=()
while IFS= read -r line || [ -n "$line" ]; do
    # "<64 hex>  <relative path>" as sha256sum writes it; an escaped name (leading '\'),
    # an absolute path or a '..' component is not something build-bundle.sh writes.
    [[ $line =~ ^[0-9a-f]{64}\ [\ *]([^/].*)$ ]] || die "malformed manifest line: $line"
    path=${BASH_REMATCH[1]}
    [[ /$path/ != */../* ]] || die "manifest names a path outside the bundle: $path"
    listed+=("$path")
done < "$MANIFEST"

missing=()
for path in "${listed[@]}"; do
    [ -f "$BUNDLE/$path" ] || missing+=("$path")
done
[ ${#missing[@]} = 0 ] || die "bundle incomplete, refusing to install; missing: ${missing[*]}"

unlisted=$(cd "$BUNDLE" && find . ! -type d ! -path ./SHA256SUMS -printf '%P\n' | LC_ALL=C sort |
    LC_ALL=C comm -23 - <(printf '%s\n' "${listed[@]}" | LC_ALL=C sort))
[ -z "$unlisted" ] || die "files not in the manifest, refusing to install (remove them or
  rebuild the bundle): $(tr '\n' ' ' <<< "$unlisted")"

if ! bad=$(cd "$BUNDLE" && sha256sum --check --strict --quiet SHA256SUMS 2>&1); then
    die "checksum mismatch, the bundle is corrupt or was tampered with; refusing to install:
$bad"
fi
say "bundle verified: ${#listed[@]} files match $MANIFEST"
[ "$VERIFY_ONLY" = 0 ] || exit 0

# -- 2. install --------------------------------------------------------------------------
# Only the bundle counts: no pip.conf (its find-links or index) on the device takes part,
# here or in the pip that `calm-edge models pull` runs.
export PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 PIP_DISABLE_PIP_VERSION_CHECK=1
info() { sed -n "s/^$1=//p" "$BUNDLE/BUNDLE-INFO"; }
[ -f "$BUNDLE/BUNDLE-INFO" ] || die "BUNDLE-INFO missing"
VERSION=$(info calm_edge_version)
WANT_PY=$(info python_version)
EXTRAS=$(info extras)
MODELS=$(info models)

have_py=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') ||
    die "$PY does not run (pass --python PATH)"
[ "$have_py" = "$WANT_PY" ] ||
    die "the bundle is for Python $WANT_PY but $PY is $have_py: pass --python python$WANT_PY, or rebuild with --python-version $have_py"

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PY" -m venv "$VENV" || die "could not create the venv (Debian/Ubuntu: apt install python$WANT_PY-venv)"
fi
spec="calm-edge==$VERSION"
[ -z "$EXTRAS" ] || spec="calm-edge[$EXTRAS]==$VERSION"
say "installing $spec into $VENV (offline)"
"$VENV/bin/python" -m pip install --disable-pip-version-check --no-index --only-binary=:all: \
    --find-links "$BUNDLE/wheels" "$spec" ||
    die "pip install failed. A missing llama-cpp-python means the bundle needs a wheel built for this device (build-bundle.sh --extra-wheel)"

# -- 3. models ---------------------------------------------------------------------------
# As root, model files are written by the service user into a models directory it owns.
models_dir_ready=0
as_owner() {  # as_owner READABLE_DIR CMD...: run CMD as the owner of the models directory
    local readable=$1
    shift
    if [ "$(id -u)" != 0 ]; then "$@"; return; fi
    runuser=${CALM_INSTALL_RUNUSER:-runuser}
    if [ "$models_dir_ready" = 0 ]; then
        if ! getent passwd "$SERVICE_USER" >/dev/null; then  # as install-service.sh makes it
            getent group "$SERVICE_USER" >/dev/null || groupadd --system "$SERVICE_USER"
            useradd --system --gid "$SERVICE_USER" --home-dir /var/lib/calm-edge \
                --no-create-home --shell /usr/sbin/nologin --comment "calm-edge daemon" \
                "$SERVICE_USER"
        fi
        mkdir -p "$(dirname "$MODELS_DIR")"
        install -d -m 0750 "$MODELS_DIR"
        chown -h "$(id -u "$SERVICE_USER"):$(id -g "$SERVICE_USER")" "$MODELS_DIR"
        models_dir_ready=1
    fi
    (cd / && "$runuser" -u "$SERVICE_USER" -- test -r "$readable" -a -x "$readable") ||
        die "$SERVICE_USER cannot read $readable: put the bundle where it can (e.g. under /opt)"
    (cd / && "$runuser" -u "$SERVICE_USER" -- env PIP_NO_CACHE_DIR=1 "$@")
}
venv_abs=$(cd "$VENV" && pwd)
if [ "$NO_MODELS" = 0 ] && [ -n "$MODELS" ]; then
    say "assembling models ($MODELS) into $MODELS_DIR"
    IFS=, read -r -a names <<< "$MODELS"
    as_owner "$BUNDLE/wheels" "$venv_abs/bin/calm-edge" models pull --wheelhouse "$BUNDLE/wheels" \
        --fleet "$BUNDLE/fleet.toml" --models-dir "$MODELS_DIR" "${names[@]}"
fi
# Models the user added on the build machine (build-bundle.sh --added): their GGUF files and
# their local manifest, each file checked against its SHA-256 and by this llama.cpp.
if [ "$NO_MODELS" = 0 ] && [ -f "$BUNDLE/added/fleet.local.toml" ]; then
    say "adding the bundled added models ($(info added_models)) into $MODELS_DIR"
    as_owner "$BUNDLE/added" "$venv_abs/bin/calm-edge" models import "$BUNDLE/added" \
        --fleet "$BUNDLE/fleet.toml" --models-dir "$MODELS_DIR"
fi
say "done. Next: $BUNDLE/scripts/install-service.sh --venv $VENV"
