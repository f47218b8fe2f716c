#!/usr/bin/env bash
# The one GPU check, for a lent GPU machine (the device tool's `run`), under 8 minutes: prints one
# table (benchmarks/gpu.py) to paste into docs/speed.md with the GPU's name. That machine has
# torch and no internet: what else the package imports comes from wheels made here beforehand,
#   pip download -d .gpu-wheels --only-binary=:all: --python-version 3.12 supervision scikit-image transformers
# and carried with the run (carry: [".gpu-wheels"]). Pass --smoke for the seconds-long CPU version.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ -d .gpu-wheels ]; then
    "$PYTHON" -m pip install -q --no-index --find-links .gpu-wheels supervision scikit-image transformers
fi
PYTHONPATH=. exec "$PYTHON" benchmarks/gpu.py "$@"
