#!/usr/bin/env bash
# Install (or remove) calm-edge as a systemd service. Idempotent: run it again after an
# upgrade, or after editing /etc/calm-edge/calm-edge.env, to bring units and drop-ins up to
# date. See docs/service.md.
#
#   install-service.sh [--venv DIR] [--profile NAME] [--pull [--wheelhouse DIR]]
#                      [--calibrate | --no-calibrate]
#   install-service.sh --uninstall [--purge]
#
# What it does (as root):
#   - the system user and group calm-edge (no login, home /var/lib/calm-edge);
#   - /etc/systemd/system/calm-edge.{service,socket} and drop-ins in calm-edge.service.d/:
#     10-memory.conf (MemoryMax= from the profile's ram_budget), 00-venv.conf (ExecStart=,
#     only when the venv is not /opt/calm-edge/venv), and on a Jetson 20-jetson.conf (GPU
#     devices) and 21-groups.conf (video, render, jtop: the ones that exist);
#   - /etc/calm-edge/calm-edge.env with CALM_EDGE_PROFILE chosen from the board, by
#     calm_edge.config.detect_profile_name (an existing file is kept; --profile updates it);
#   - with --pull, the fleet's model files into /var/lib/calm-edge/models, pulled as the
#     service user (runuser) into that directory, which it owns: a link planted there
#     cannot make the pull write where root could;
#   - when model files are in the state directory's models/ (after --pull, say),
#     `calm-edge calibrate --quick` as the service user into the service's state directory,
#     before the service starts: each model's load time, speed, memory and 2 canaries per
#     domain on this device (about a minute for the default fleet on 2 cores), so that the
#     first answers are routed on this device's figures. --calibrate runs the full
#     calibration instead (10 canaries per domain: minutes); --no-calibrate none (the daemon
#     then calibrates by itself, idle or between requests);
#   - systemctl daemon-reload, enable --now calm-edge.socket, try-restart calm-edge.service,
#     when systemd runs (skipped with a message otherwise, or with --no-systemctl).
# --uninstall stops and removes the units, drop-ins and the user and group; state
# (/var/lib/calm-edge, /var/cache/calm-edge) and calm-edge.env stay unless --purge.
# The venv is never touched.
#
# For tests and image builds: --root DIR installs into a directory tree instead of /
# (board files are read from DIR/proc/device-tree/model and DIR/etc/nv_tegra_release;
# users go to DIR/etc/passwd and DIR/etc/group) and implies --no-systemctl. The service
# user exists only in that tree, so --pull runs as the caller there, unless
# CALM_INSTALL_RUNUSER names a runuser-compatible command (tests).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
UNIT_SRC=$SCRIPT_DIR/systemd
DEFAULT_VENV=/opt/calm-edge/venv
NAME=calm-edge

ROOT=/
VENV=$DEFAULT_VENV
PROFILE=
PULL=0
CALIBRATE=quick
WHEELHOUSE=
UNINSTALL=0
PURGE=0
SYSTEMCTL=1

say() { printf 'install-service: %s\n' "$*"; }
die() { printf 'install-service: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case $1 in
        --root) ROOT=${2:?--root needs a directory}; shift ;;
        --venv) VENV=${2:?--venv needs a directory}; shift ;;
        --profile) PROFILE=${2:?--profile needs a name}; shift ;;
        --pull) PULL=1 ;;
        --calibrate) CALIBRATE=full ;;
        --no-calibrate) CALIBRATE=none ;;
        --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift ;;
        --uninstall) UNINSTALL=1 ;;
        --purge) PURGE=1 ;;
        --no-systemctl) SYSTEMCTL=0 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument: $1 (see --help)" ;;
    esac
    shift
done

[ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || die "--purge goes with --uninstall"
if [ "$ROOT" != / ]; then
    [ -d "$ROOT" ] || die "--root $ROOT: no such directory"
    ROOT=$(cd "$ROOT" && pwd)
    SYSTEMCTL=0
elif [ "$(id -u)" != 0 ]; then
    die "run as root (sudo $0 ...), or use --root DIR"
fi
R=${ROOT%/}   # prefix for absolute paths: "" for the real root
UNIT_DIR=$R/etc/systemd/system
DROPIN_DIR=$UNIT_DIR/$NAME.service.d
CONF_DIR=$R/etc/calm-edge
ENV_FILE=$CONF_DIR/calm-edge.env
STATE_DIR=$R/var/lib/calm-edge
CACHE_DIR=$R/var/cache/calm-edge
DOC_DIR=$R/opt/calm-edge/docs

systemd_running() { [ "$SYSTEMCTL" = 1 ] && [ -d /run/systemd/system ]; }

# Account helpers: the real root goes through NSS (getent) and the shadow tools; a --root
# tree has its own etc/passwd and etc/group, edited with the tools' --prefix.
prefix_args=()
[ -z "$R" ] || prefix_args=(--prefix "$ROOT")
has_group() {
    if [ -z "$R" ]; then getent group "$1" >/dev/null
    else [ -f "$R/etc/group" ] && grep -q "^$1:" "$R/etc/group"; fi
}
has_user() {
    if [ -z "$R" ]; then getent passwd "$1" >/dev/null
    else [ -f "$R/etc/passwd" ] && grep -q "^$1:" "$R/etc/passwd"; fi
}
# uid:gid of a user, from NSS or from the tree's etc/passwd.
user_ids() {
    if [ -z "$R" ]; then printf '%s:%s\n' "$(id -u "$1")" "$(id -g "$1")"
    else awk -F: -v u="$1" '$1 == u { print $3 ":" $4 }' "$R/etc/passwd"; fi
}
# Run "$@" as the service user: runuser on the real system; in a --root tree as the caller
# (the user exists only in the tree), unless CALM_INSTALL_RUNUSER names a runuser-compatible
# command. From /, where any user may be.
as_service_user() {
    local runuser=${CALM_INSTALL_RUNUSER:-}
    if [ -z "$runuser" ] && [ -z "$R" ]; then runuser=runuser; fi
    if [ -n "$runuser" ]; then (cd / && "$runuser" -u "$NAME" -- "$@")
    else (cd / && "$@"); fi
}

# -- uninstall ---------------------------------------------------------------------------
if [ "$UNINSTALL" = 1 ]; then
    if systemd_running; then
        systemctl disable --now "$NAME.socket" "$NAME.service" 2>/dev/null || true
    fi
    rm -f "$UNIT_DIR/$NAME.service" "$UNIT_DIR/$NAME.socket"
    rm -rf "$DROPIN_DIR" "$DOC_DIR"
    rmdir "$R/opt/calm-edge" 2>/dev/null || true
    if systemd_running; then
        systemctl daemon-reload
        systemctl reset-failed "$NAME.service" "$NAME.socket" 2>/dev/null || true
    fi
    if has_user "$NAME"; then userdel "${prefix_args[@]}" "$NAME"; fi
    if has_group "$NAME"; then groupdel "${prefix_args[@]}" "$NAME"; fi
    if [ "$PURGE" = 1 ]; then
        rm -rf "$STATE_DIR" "$CACHE_DIR" "$ENV_FILE"
        rmdir "$CONF_DIR" 2>/dev/null || true
        say "removed the service, the $NAME user, its state, cache and $ENV_FILE"
    else
        say "removed the service and the $NAME user; kept $STATE_DIR, $CACHE_DIR and" \
            "$ENV_FILE (--purge removes them)"
    fi
    exit 0
fi

# -- install -----------------------------------------------------------------------------
for f in "$NAME.service" "$NAME.socket" jetson.conf; do
    [ -f "$UNIT_SRC/$f" ] || die "missing $UNIT_SRC/$f (run this script from the calm-edge sources or an offline bundle)"
done
PY=$VENV/bin/python
if ! { [ -x "$VENV/bin/calm-edge" ] && "$PY" -c 'import calm_edge' 2>/dev/null; }; then
    die "no calm-edge installed in $VENV: install it first (scripts/install-offline.sh BUNDLE, or python3 -m venv $VENV && $VENV/bin/pip install calm-edge), or pass --venv DIR"
fi

# Board detection, profile and memory limit come from the package itself
# (calm_edge.config), reading the board files under ROOT and the settings in ENV_FILE.
# Output: one line, tab-separated: profile, board family, ram_budget_bytes, device model.
# shellcheck disable=SC2016  # the Python program is single-quoted on purpose
PROBE='
import sys
from pathlib import Path
from calm_edge.config import ConfigError, detect_profile_name, load_settings

root, wanted, env_file = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
env = {}
if env_file.is_file():
    for line in env_file.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            env[key.strip()] = value.strip().strip("\"'\''")
profile = wanted or env.get("CALM_EDGE_PROFILE", "") or "auto"
if profile == "auto":
    profile = detect_profile_name(root)
env["CALM_EDGE_PROFILE"] = profile
try:
    s = load_settings(profile, env=env, root=root)
except ConfigError as e:
    sys.exit(f"install-service: error: {e}")
model = ""
for p in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
    try:
        model = (root / p).read_bytes().rstrip(b"\0").decode(errors="replace")
        break
    except OSError:
        pass
print(profile, s.profile.device.board, s.profile.memory.ram_budget_bytes,
      " ".join(model.split()) or "-", sep="\t")
'
probe_out=$("$PY" -c "$PROBE" "$ROOT" "$PROFILE" "$ENV_FILE") ||
    die "could not resolve the profile (see above)"
IFS=$'\t' read -r PROFILE_NAME BOARD BUDGET_BYTES MODEL <<< "$probe_out"
say "board: $MODEL; profile: $PROFILE_NAME ($BOARD)"

# The service user: a system account with no login; its home is the state directory.
has_group "$NAME" || groupadd "${prefix_args[@]}" --system "$NAME"
has_user "$NAME" || useradd "${prefix_args[@]}" --system --gid "$NAME" \
    --home-dir /var/lib/calm-edge --no-create-home --shell /usr/sbin/nologin \
    --comment "calm-edge daemon" "$NAME"

# Units. Local changes belong in drop-ins (systemctl edit calm-edge), so these are
# overwritten on every run.
install -d -m 0755 "$UNIT_DIR" "$DROPIN_DIR"
install -m 0644 "$UNIT_SRC/$NAME.service" "$UNIT_SRC/$NAME.socket" "$UNIT_DIR/"

# MemoryMax = ram_budget (the resident models) + max(512 MiB, ram_budget / 4) for the
# runtime around them, rounded up to MiB.
MIB=$((1024 * 1024))
HEADROOM=$((BUDGET_BYTES / 4 > 512 * MIB ? BUDGET_BYTES / 4 : 512 * MIB))
MEMORY_MAX_MIB=$(((BUDGET_BYTES + HEADROOM + MIB - 1) / MIB))
cat > "$DROPIN_DIR/10-memory.conf" <<EOF
# Written by install-service.sh for profile $PROFILE_NAME: ram_budget $((BUDGET_BYTES / MIB)) MiB
# + $((HEADROOM / MIB)) MiB for the runtime. Re-run install-service.sh after changing the
# profile or CALM_EDGE_RAM_BUDGET in /etc/calm-edge/calm-edge.env.
[Service]
MemoryMax=${MEMORY_MAX_MIB}M
EOF
chmod 0644 "$DROPIN_DIR/10-memory.conf"

if [ "$VENV" != "$DEFAULT_VENV" ]; then
    cat > "$DROPIN_DIR/00-venv.conf" <<EOF
# Written by install-service.sh: calm-edge is installed in $VENV.
[Service]
ExecStart=
ExecStart=$VENV/bin/calm-edge serve
EOF
    chmod 0644 "$DROPIN_DIR/00-venv.conf"
else
    rm -f "$DROPIN_DIR/00-venv.conf"
fi

if [ "$BOARD" = jetson ]; then
    install -m 0644 "$UNIT_SRC/jetson.conf" "$DROPIN_DIR/20-jetson.conf"
    groups=()
    for g in video render jtop; do
        if has_group "$g"; then groups+=("$g"); fi
    done
    if [ ${#groups[@]} -gt 0 ]; then
        cat > "$DROPIN_DIR/21-groups.conf" <<EOF
# Written by install-service.sh: GPU device nodes (video, render) and jtop's socket (jtop).
# Only groups that exist are listed: install jetson-stats, then re-run to add jtop.
[Service]
SupplementaryGroups=${groups[*]}
EOF
        chmod 0644 "$DROPIN_DIR/21-groups.conf"
    else
        rm -f "$DROPIN_DIR/21-groups.conf"
    fi
    has_group jtop || say "no jtop group: install jetson-stats for measured power rails, then re-run"
else
    rm -f "$DROPIN_DIR/20-jetson.conf" "$DROPIN_DIR/21-groups.conf"
fi

# The environment file is the operator's: created once, then only CALM_EDGE_PROFILE is
# rewritten, and only when --profile asks for it.
install -d -m 0755 "$CONF_DIR"
if [ ! -f "$ENV_FILE" ]; then
    cat > "$ENV_FILE" <<EOF
# calm-edge service settings: KEY=VALUE lines read by calm-edge.service (EnvironmentFile=).
# Chosen by install-service.sh for the board "$MODEL".
# Re-run install-service.sh after changing the profile or the RAM budget, so that the
# service's MemoryMax= follows. Every setting: calm-edge config --fields.
CALM_EDGE_PROFILE=$PROFILE_NAME
#CALM_EDGE_RAM_BUDGET=2G
#CALM_EDGE_LOG_LEVEL=debug
EOF
    chmod 0644 "$ENV_FILE"
    say "wrote $ENV_FILE"
elif [ -n "$PROFILE" ]; then
    tmp=$(mktemp "$ENV_FILE.XXXXXX")
    grep -v '^[[:space:]]*CALM_EDGE_PROFILE=' "$ENV_FILE" > "$tmp" || true
    printf 'CALM_EDGE_PROFILE=%s\n' "$PROFILE_NAME" >> "$tmp"
    chmod 0644 "$tmp"
    mv "$tmp" "$ENV_FILE"
    say "set CALM_EDGE_PROFILE=$PROFILE_NAME in $ENV_FILE"
else
    say "kept $ENV_FILE"
fi

if [ -f "$SCRIPT_DIR/../docs/service.md" ]; then
    install -D -m 0644 "$SCRIPT_DIR/../docs/service.md" "$DOC_DIR/service.md"
fi

if [ "$PULL" = 1 ]; then
    # The service user owns the state and models directories (systemd also chowns
    # StateDirectory= on start) and does the pull: never root writing into a directory
    # another user controls. chown -h: a link is never followed.
    ids=$(user_ids "$NAME")
    [ -n "$ids" ] || die "no user $NAME"
    install -d -m 0750 "$STATE_DIR"
    install -d -m 0750 "$STATE_DIR/models"
    if [ "$(id -u)" = 0 ]; then chown -h "$ids" "$STATE_DIR" "$STATE_DIR/models"; fi
    venv_abs=$(cd "$VENV" && pwd)
    pull_args=(models pull --profile "$PROFILE_NAME" --models-dir "$STATE_DIR/models")
    if [ -n "$WHEELHOUSE" ]; then
        house=$(cd "$WHEELHOUSE" && pwd) || die "--wheelhouse $WHEELHOUSE: no such directory"
        as_service_user test -r "$house" -a -x "$house" ||
            die "$NAME cannot read $house: put the wheelhouse where it can (e.g. under /opt)"
        pull_args+=(--wheelhouse "$house")
    fi
    as_service_user env PIP_NO_CACHE_DIR=1 "$venv_abs/bin/calm-edge" "${pull_args[@]}"
fi

if [ "$CALIBRATE" != none ] && ! compgen -G "$STATE_DIR/models/*.gguf" >/dev/null; then
    say "no model files in $STATE_DIR/models yet: not calibrated (the daemon calibrates" \
        "models by itself once they are there; or rerun this after --pull)"
elif [ "$CALIBRATE" != none ]; then
    # Before the service starts: one process on the board's cores and RAM at a time.
    cal_args=(calibrate --profile "$PROFILE_NAME" --models-dir "$STATE_DIR/models"
              --state-dir "$STATE_DIR" --no-daemon)
    [ "$CALIBRATE" = full ] || cal_args+=(--quick)
    say "calibrating the models on this device ($CALIBRATE; --no-calibrate skips it)"
    install -d -m 0750 "$STATE_DIR"
    if [ -z "$R" ]; then
        chown -h "$NAME:$NAME" "$STATE_DIR"
        if systemd_running; then systemctl stop "$NAME.service" 2>/dev/null || true; fi
        runuser -u "$NAME" -- env HOME="$STATE_DIR" "$VENV/bin/calm-edge" "${cal_args[@]}" ||
            say "calibration did not finish; the daemon calibrates by itself"
    else
        "$VENV/bin/calm-edge" "${cal_args[@]}" ||
            say "calibration did not finish; the daemon calibrates by itself"
    fi
fi

if systemd_running; then
    systemctl daemon-reload
    systemctl enable --now "$NAME.socket"
    systemctl try-restart "$NAME.service"
    say "enabled $NAME.socket; the first request starts $NAME.service"
    say "clients need the $NAME group: usermod -aG $NAME USER (then log in again)"
elif [ "$SYSTEMCTL" = 1 ]; then
    say "systemd is not running here: units installed but not enabled; on the target run" \
        "systemctl daemon-reload && systemctl enable --now $NAME.socket"
else
    say "installed into $ROOT (systemctl skipped)"
fi
