#!/usr/bin/env bash
# Run the test suite from scratch: venv, the project with its test extras, the SmolLM2
# model for the integration tests, then ruff, mypy and pytest. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev,tflite,onnx]'
# The integration tests need the real SmolLM2-135M (~100 MB); the rest of the fleet is
# optional here (its tests skip when a model is missing).
.venv/bin/calm-edge models pull -q smollm2-135m

.venv/bin/ruff check calm_edge tests scripts
.venv/bin/mypy
CALM_TEST_REQUIRE_MODELS=${CALM_TEST_REQUIRE_MODELS:-smollm2-135m} \
  .venv/bin/python -m pytest "$@"
