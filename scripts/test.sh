#!/usr/bin/env bash
# Set up .venv (first run only), lint, and run the test suite (temporary FiftyOne database and folders).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --browser
export FIFTYONE_DO_NOT_TRACK=true
.venv/bin/ruff check .  # style: pyproject's [tool.ruff]
# Two workers (pytest-xdist) on the 2 cores, each test group (tests/conftest.py) on one of them, the
# long ones first; pyproject adds -ra: every skip is listed with its reason, and the 25 slowest tests are
# listed at the end (the command has a 15-minute budget). `-n 0` runs in one process.
exec .venv/bin/python -m pytest -n 2 --dist loadgroup --no-loadscope-reorder --durations=25 "$@"
