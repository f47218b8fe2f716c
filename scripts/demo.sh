#!/usr/bin/env bash
# Set up .venv (first run only) and run the offline demo: shapes-world scenes, shipped CLIP, embedded MongoDB.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FIFTYONE_DO_NOT_TRACK=${FIFTYONE_DO_NOT_TRACK:-true}
exec .venv/bin/python -m fiftyone_clip_zeroshot.demo "$@"
