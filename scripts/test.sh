#!/usr/bin/env bash
# Set up .venv (first run only), lint, and run the test suite (temporary FiftyOne database and folders).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
export FIFTYONE_DO_NOT_TRACK=true
.venv/bin/ruff check .  # style: pyproject's [tool.ruff]
exec .venv/bin/python -m pytest "$@"  # pyproject adds -ra: every skip is listed with its reason
