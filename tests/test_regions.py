"""Class-agnostic region proposals: boxes that frame the shapes, without any model weights."""

import numpy as np
import pytest
import skimage.data
import supervision as sv

from fiftyone_clip_zeroshot import localize
from fiftyone_clip_zeroshot.core.geometry.images import load_image
from fiftyone_clip_zeroshot.core.geometry.regions import region_proposals
from fiftyone_clip_zeroshot.shapes.evaluate import held_out_scenes


@pytest.mark.parametrize("hard, floor", [(False, 0.95), (True, 0.9)])
def test_proposals_frame_almost_every_shape(hard, floor):
    best = []
    for scene in held_out_scenes(12, "hard" if hard else "easy"):
        boxes = region_proposals(load_image(scene.image))
        width, height = scene.image.size
        assert boxes.shape[1] == 4 and len(boxes) < 400
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2:] > boxes[:, :2]).all()
        if len(scene.boxes):
            best += list(sv.box_iou_batch(scene.boxes, boxes).max(1))
    assert np.mean(np.array(best) >= 0.5) >= floor, sorted(best)[:5]


def test_blank_image_gives_few_proposals_and_no_error():
    boxes = region_proposals(load_image(np.full((120, 200, 3), 128, np.uint8)))
    assert len(boxes) <= 2


def test_near_duplicates_are_kept_once():
    boxes = region_proposals(load_image(held_out_scenes(1)[0].image))
    iou = sv.box_iou_batch(boxes, boxes)
    np.fill_diagonal(iou, 0)
    assert iou.max() <= 0.9


@pytest.mark.parametrize("method", ["proposals", "dense"])
def test_at_a_threshold_of_zero_no_unread_candidate_becomes_a_box(method, shapes_model):
    """A photo has hundreds of candidates and each prompt reads only its best: the others, never
    read, must not come out as boxes of the first prompt at confidence 0."""
    (result,) = localize(skimage.data.astronaut(), ["red circle"], shapes_model, method=method, confidence_thresh=0.0)
    assert len(result.detections) and (result.detections.confidence > 0).all()
