"""The README's Python blocks run as written: each in a fresh interpreter with this environment,
in order, against a small ``clip-zeroshot-demo`` dataset; a block marked "needs the hub" must stop
with the clear offline error instead, and one marked "needs GitHub" with FiftyOne's error for an
unreachable zoo source (tests/test_zoo.py runs that path from a loopback archive)."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset

REPO = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), re.S)
NO_APP = """
import fiftyone as fo


class _NoApp:  # the browser tests open the App; here launch_app and wait() return at once
    def wait(self):
        pass


fo.launch_app = lambda *args, **kwargs: _NoApp()
"""
OFFLINE = """
try:
{block}
except Exception as error:
    assert {check}, error
else:
    raise AssertionError("expected the offline error")
"""
CHECKS = {  # marker in a block -> what its offline error must satisfy
    "needs the hub": 'type(error).__name__ == "ModelLoadError" and "Download them once" in str(error)',
    "needs GitHub": '"Failed to retrieve model metadata" in str(error)',
}


@pytest.fixture(scope="module")
def demo_dataset(tmp_root, plugin_dir):
    return load_shapes_dataset("clip-zeroshot-demo", 4, tmp_root / "images" / "readme", persistent=True)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs_as_written(index, demo_dataset, tmp_path):
    block = BLOCKS[index]
    marker = next((m for m in CHECKS if m in block), None)
    script = OFFLINE.format(block=textwrap.indent(block, "    "), check=CHECKS[marker]) if marker else block
    result = subprocess.run([sys.executable, "-c", NO_APP + script], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env=os.environ)
    assert result.returncode == 0, f"README block {index + 1}:\n{block}\n{result.stderr[-3000:]}"
