"""Localization quality floors on held-out scenes (30 for proposals and dense, 20 for the costly
sliding window, 12 for occlusion, 20 photo scenes), with the packaged models (no mocks). Each
evaluation prints its figures as it ends. Every floor holds with a margin on these counts as on
the 40 and 20 scenes it was set on (docs/quality.md, "The test floors").

The shipped ``shapes-world`` CLIP keeps about the numbers it had before region proposals
(sliding window 0.672, less the 0.011 that box refinement trades there for its gains on photos:
0.66; occlusion 0.383, heatmap peak 0.967); every model of the test panel,
trained by other recipes (``scripts/train_shapes_clip.py``), must meet the same floors with the
same defaults. The dense localizer's mAP floor is the issue's 0.45 on the shipped model; on the
others, whose patch tokens know little (``benchmarks/dense_maps.py``), it keeps what they reached.
The panel's SigLIP (``shapes-siglip``) is held to its own floors on the easy set, at its family's
thresholds: sliding window and proposals mAP@.5 and absent-prompt boxes.
"""

import hashlib
import time

import numpy as np
import pytest

from fiftyone_clip_zeroshot import load_model, localize
from fiftyone_clip_zeroshot.core.localizers import candidates
from fiftyone_clip_zeroshot.shapes.evaluate import evaluate, held_out_scenes

pytestmark = pytest.mark.slow  # quality floors over the panel: the full tier only

SCENES = held_out_scenes(30)
SLOW_SCENES = SCENES[:20]  # sliding window costs 5-20x more per scene; 20 keep shapes-world's heatmap-peak margin
OCCLUSION_SCENES = SCENES[:12]  # the costliest method (up to 20 s a scene); every floor keeps its margin on 12
PANEL = ["shapes-world", "shapes-single-object", "shapes-alt-text"]
DENSE_MAP50 = {"shapes-world": 0.45, "shapes-single-object": 0.10, "shapes-alt-text": 0.35}
PHOTO_SCENES = 20
# shapes-photo on the first 20 photo scenes, with box refinement: what it reached (mAP@.5 0.631 and 0.692, mAP@.5:.95
# 0.380 and 0.458; absent-prompt boxes 1.3 % and 2.4 %) less the margin the 40-scene floors had (0.04 mAP@.5); the
# mAP@.5:.95 floors (margin 0.03) fail without the refinement (0.348 and 0.417)
PHOTO_FLOORS = {"sliding_window": (0.59, 0.35, 0.02), "proposals": (0.65, 0.43, 0.03)}  # (mAP@.5, @.5:.95, absent)
# shapes-siglip on the easy scenes (20 for sliding window, 30 for proposals) at its family's thresholds: it reached
# 0.646 / 2.62 % and 0.660 / 2.22 %; floors and ceilings keep the photo floors' margins (0.04 mAP, 0.7 points)
SIGLIP_FLOORS = {"sliding_window": (0.60, 0.035), "proposals": (0.62, 0.03)}


@pytest.fixture(scope="module", autouse=True)
def proposals_once_per_scene():
    """Every model and method reads the same class-agnostic candidates of a scene (they need no
    weights): segment each scene once for the whole module. The boxes are equal, only cheaper."""
    segment, boxes = candidates.candidate_boxes, {}

    def once(pixels, opts):
        image = hashlib.sha1(pixels.cpu().numpy().tobytes()).digest()
        key = (image, opts.proposal_scales, opts.proposal_side, opts.proposal_tile)
        if key not in boxes:
            boxes[key] = segment(pixels, opts)
        return boxes[key].copy()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(candidates, "candidate_boxes", once)
        yield


@pytest.fixture(scope="module", params=PANEL)
def model(request, shapes_model):
    return shapes_model if request.param == "shapes-world" else load_model(request.param, device="cpu")


@pytest.fixture(scope="module")
def photo_model():
    return load_model("shapes-photo", device="cpu")


@pytest.fixture(scope="module")
def siglip_model():
    return load_model("shapes-siglip", device="cpu")


def _evaluated(model, method: str, say, scenes=SCENES):
    start = time.perf_counter()
    quality = evaluate(model, scenes, method)
    say(f"  quality of {model.name}, {method}, {len(scenes)} scenes: mAP@.5 {quality.map50:.3f}, absent-prompt boxes "
        f"{quality.absent_prompt_fp_rate:.2%} of pairs ({time.perf_counter() - start:.0f} s)")
    return quality


@pytest.fixture(scope="module")
def sliding(model, say):
    return _evaluated(model, "sliding_window", say, SLOW_SCENES)


@pytest.fixture(scope="module")
def occlusion(model, say):
    return _evaluated(model, "occlusion", say, OCCLUSION_SCENES)


@pytest.fixture(scope="module")
def proposals(model, say):
    return _evaluated(model, "proposals", say)


@pytest.fixture(scope="module")
def dense(model, say):
    return _evaluated(model, "dense", say)


def test_sliding_window_map50(sliding, model):
    assert sliding.map50 >= (0.66 if model.name == "shapes-world" else 0.55), sliding


def test_occlusion_map50(occlusion, model):
    assert occlusion.map50 >= (0.383 if model.name == "shapes-world" else 0.40), occlusion


def test_proposals_map50(proposals):
    assert proposals.map50 >= 0.55, proposals


def test_dense_map50(dense, model):
    assert dense.map50 >= DENSE_MAP50[model.name], dense


@pytest.mark.parametrize("method", ["sliding", "occlusion", "proposals", "dense"])
def test_absent_prompts_draw_no_box(method, model, request):
    quality = request.getfixturevalue(method)
    assert quality.absent_prompt_fp_rate <= 0.02, quality
    if model.name == "shapes-world":
        assert quality.absent_scene_fp_rate <= 0.10, quality


@pytest.mark.parametrize("method", ["sliding", "occlusion", "proposals", "dense"])
def test_heatmap_peak_lies_on_the_object(method, model, request):
    quality = request.getfixturevalue(method)
    assert quality.peak_in_box >= (0.96 if model.name == "shapes-world" and method == "sliding" else 0.85), quality


@pytest.mark.parametrize("method", PHOTO_FLOORS)
def test_the_photo_trained_model_on_photo_scenes(method, photo_model, say):
    quality = _evaluated(photo_model, method, say, held_out_scenes(PHOTO_SCENES, "photo"))
    map50, map50_95, absent = PHOTO_FLOORS[method]
    assert quality.map50 >= map50 and quality.map50_95 >= map50_95, quality
    assert quality.absent_prompt_fp_rate <= absent, quality


@pytest.mark.parametrize("method", SIGLIP_FLOORS)
def test_the_siglip_model_on_easy_scenes(method, siglip_model, say):
    quality = _evaluated(siglip_model, method, say, SLOW_SCENES if method == "sliding_window" else SCENES)
    map50, absent = SIGLIP_FLOORS[method]
    assert quality.map50 >= map50 and quality.absent_prompt_fp_rate <= absent, quality


def test_result_shape_and_types(shapes_model):
    scene = SCENES[1]
    results = localize(np.asarray(scene.image), ["red circle", "blue star", "red circle"], shapes_model)
    assert [r.prompt for r in results] == ["red circle", "blue star"]
    for index, result in enumerate(results):
        assert result.heatmap.dtype == np.float32 and 0 <= result.heatmap.min() <= result.heatmap.max() <= 1
        assert abs(result.heatmap.shape[0] / result.heatmap.shape[1] - 384 / 512) < 0.01
        dets = result.detections
        assert (dets.class_id == index).all() and list(dets.data["prompt"]) == [result.prompt] * len(dets)
        assert (dets.xyxy[:, :2] >= 0).all() and (dets.xyxy[:, 2] <= 512).all() and (dets.xyxy[:, 3] <= 384).all()
