"""The benchmarks run (CI-sized); their figures are checked by reading them, not by timed tests."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_speed_benchmark_smoke():
    out = _run("benchmarks/speed.py", "--smoke", "--device", "cpu")
    assert "reference loop" in out and "ours sliding_window" in out and "ours occlusion, worst" in out
    assert "images/s" in out


def test_quality_benchmark_smoke():
    out = _run("benchmarks/quality.py", "--scenes", "2", "--device", "cpu")
    assert "sliding_window" in out and "occlusion" in out and "zero-shot accuracy" in out
