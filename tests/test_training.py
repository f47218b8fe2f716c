"""Every recipe of the panel's training script runs and saves a checkpoint that loads like any other."""

import subprocess
import sys
from pathlib import Path

import pytest

from fiftyone_clip_zeroshot import load_model

pytestmark = pytest.mark.slow  # training runs: the full tier only

REPO = Path(__file__).resolve().parents[1]


def _train(recipe: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "scripts/train_shapes_clip.py", "--recipe", recipe, "--steps", "2", "--batch-size", "8",
         "--pool-size", "64", "--eval-crops", "8", "--out", str(out), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )


@pytest.fixture(scope="module")
def photo_base(tmp_path_factory):
    """The first stage of the photo recipes, trained once: its own test and the second stage read it."""
    out = tmp_path_factory.mktemp("photo-base") / "shapes-photo-base"
    result = _train("shapes-photo-base", out)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.mark.parametrize("recipe", ["shapes-world", "shapes-alt-text", "shapes-single-object", "shapes-photo-base",
                                    "shapes-siglip-base"])
def test_recipe_trains_and_loads(recipe, tmp_path, request):
    if recipe == "shapes-photo-base":
        out = request.getfixturevalue("photo_base")
    else:
        out = tmp_path / recipe
        result = _train(recipe, out)
        assert result.returncode == 0, result.stderr[-2000:]
    model = load_model(str(out), device="cpu")
    assert model.encode_text(["a red circle and a blue star"]).shape[0] == 1
    assert model.image_size == (96 if recipe == "shapes-single-object" else 64)
    assert model.family.name == ("SigLIP" if recipe == "shapes-siglip-base" else "CLIP")


def test_a_recipe_that_starts_from_another_needs_its_weights(tmp_path, photo_base):
    refused = _train("shapes-photo", tmp_path / "photo")
    assert refused.returncode == 2 and "train --recipe shapes-photo-base first" in refused.stderr
    result = _train("shapes-photo", tmp_path / "photo", "--init", str(photo_base))
    assert result.returncode == 0, result.stderr[-2000:]
    assert load_model(str(tmp_path / "photo"), device="cpu").image_size == 64
