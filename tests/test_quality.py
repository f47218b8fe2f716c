"""Localization quality floors with the shipped shapes-world CLIP on 40 held-out scenes (no mocks)."""

import numpy as np
import pytest

from fiftyone_clip_zeroshot import localize
from fiftyone_clip_zeroshot.shapes.evaluate import HELD_OUT_SCENE_SEED, evaluate
from fiftyone_clip_zeroshot.shapes.world import render_scene

SCENES = [render_scene(HELD_OUT_SCENE_SEED, i, 512, 384) for i in range(40)]


@pytest.fixture(scope="module")
def sliding(shapes_model):
    return evaluate(shapes_model, SCENES, "sliding_window")


@pytest.fixture(scope="module")
def occlusion(shapes_model):
    return evaluate(shapes_model, SCENES, "occlusion")


def test_sliding_window_map50(sliding):
    assert sliding.map50 >= 0.50, sliding


def test_occlusion_map50(occlusion):
    assert occlusion.map50 >= 0.35, occlusion


@pytest.mark.parametrize("method", ["sliding", "occlusion"])
def test_absent_prompts_draw_no_box(method, request):
    quality = request.getfixturevalue(method)
    assert quality.absent_scene_fp_rate <= 0.10, quality


def test_heatmap_peak_lies_on_the_object(sliding):
    assert sliding.peak_in_box >= 0.90, sliding


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
