"""The benchmarks run (CI-sized); their figures are checked by reading them, not by timed tests."""

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import fiftyone as fo
import pytest

pytestmark = pytest.mark.slow  # benchmark subprocesses: the full tier only

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


def test_batching_benchmark_smoke():
    out = _run("benchmarks/batching.py", "--images", "2", "--batch", "2", "--smoke", "--device", "cpu")
    assert "2 together (images/s)" in out and "| yes |" in out and "| NO |" not in out


def test_store_benchmark_smoke():
    out = _run("benchmarks/store.py", "--scenes", "1", "--photos", "0", "--methods", "proposals", "dense",
               "--device", "cpu")
    rows = [line.split() for line in out.splitlines() if line.startswith("scenes ")]
    assert [row[1] for row in rows] == ["proposals", "dense"]
    for row in rows:
        encoded, stored = row[6].split("+")  # warm, same prompts: every crop from the store
        assert encoded == "0" and int(stored) > 0


def test_reprompt_benchmark_smoke():
    """Seeded entries equal a real cold run's, and the warm run reads every crop from the store."""
    out = _run("benchmarks/reprompt.py", "--images", "2", "--templates", "1", "--check", "1", "--methods", "proposals")
    assert "layout check: 1 of 1 seeded entries equal a real cold run's" in out
    row = next(line.split() for line in out.splitlines() if line.startswith("proposals "))
    assert row[1] == "2" and row[4] == "0.0" and "failed" not in row  # 2 images, 0 crops encoded per image


def test_gpu_script_smoke_on_the_cpu():
    result = subprocess.run(["bash", "benchmarks/gpu.sh", "--smoke", "--device", "cpu"], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert {row.split(" | ")[3] for row in rows} == {"sliding_window", "proposals", "dense"}
    assert "| reference loop |" in result.stdout and "| same results |" in result.stdout
    assert result.stdout.count("| store: warm, new prompts |") == 3 and "= cache=False" in result.stdout
    assert "DIFFERS" not in result.stdout


def test_quality_benchmark_smoke():
    out = _run("benchmarks/quality.py", "--scenes", "2", "--device", "cpu")
    assert "sliding_window" in out and "occlusion" in out and "zero-shot accuracy" in out
    assert "false positives at IoU 0.5" in out and "wrong class" in out


def _real_clip():
    spec = importlib.util.spec_from_file_location("real_clip", REPO / "benchmarks" / "real_clip.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_clip_benchmark_runs_its_coco_path_on_a_shapes_dataset(capsys):
    _real_clip().main(["--model", "shapes-world", "--dataset", "shapes", "--max-samples", "3",
                       "--methods", "proposals", "--device", "cpu"])
    out = capsys.readouterr().out
    assert "mAP@.5:.95" in out and "shapes-world" in out and "mAP@[.5:.95]" in out
    dataset = fo.load_dataset("clip-zeroshot-shapes-3")
    assert dataset.list_evaluations() == ["clip_proposals"]
    labels = set(dataset.distinct("clip_proposals.detections.label"))
    assert labels and labels <= set(dataset.distinct("ground_truth.detections.label"))  # class names, not prompts
    assert dataset.count_values("clip_proposals.detections.clip_proposals").get("tp", 0) > 0


def test_real_clip_benchmark_says_what_to_fetch_when_offline():
    real_clip = _real_clip()
    with pytest.raises(SystemExit, match="hub could not be reached"):
        real_clip.main(["--model", "openai/clip-vit-base-patch32", "--dataset", "shapes", "--max-samples", "1"])
    try:
        socket.gethostbyname("images.cocodataset.org")
    except OSError:
        with pytest.raises(real_clip.DataUnavailable, match="run this where the internet is reachable"):
            real_clip.load_coco(2)
    else:
        pytest.skip("COCO is reachable from here; the offline error is not exercised")


def test_search_benchmark_smoke():
    out = _run("benchmarks/search.py", "--scenes", "12", "--min-objects", "3", "--scale", "20", "--backends", "sklearn")
    row = next(line.split() for line in out.splitlines() if line.startswith("shapes-world"))
    assert int(row[1]) > 0 and 0 <= float(row[2]) <= 1 and 0 <= float(row[3]) <= 1
    assert "20 samples x" in out and "sklearn  build" in out and "fz.search" in out


def test_video_benchmark_smoke():
    out = _run("benchmarks/video.py", "--videos", "1", "--frames", "6", "--frame-step", "3", "--methods", "proposals",
               "--backgrounds", "flat")
    row = next(line.split() for line in out.splitlines() if line.startswith("shapes-world "))
    assert row[1:3] == ["flat", "proposals"] and 0 <= float(row[3]) <= 1
