#!/usr/bin/env bash
# Set up .venv (first run only), link the plugin into FiftyOne's plugins dir, and run the offline demo:
# shapes-world scenes, shipped CLIP, embedded MongoDB. --launch opens the App afterwards, --open only opens it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FIFTYONE_DO_NOT_TRACK=${FIFTYONE_DO_NOT_TRACK:-true}
# FiftyOne's version check of the embedded mongod 6.0.5 prints an "oldest supported version" notice; skip it here
export FIFTYONE_DATABASE_VALIDATION=${FIFTYONE_DATABASE_VALIDATION:-false}
exec .venv/bin/python -m fiftyone_clip_zeroshot.demo "$@"
