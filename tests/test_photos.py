"""Real photos and the candidate stage: the photo instrument on the installed photos, ``fz.propose``,
the candidate budget, tiled proposals for small objects, and the cap on detections."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
import supervision as sv
import torch

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.photos import installed_photos
from fiftyone_clip_zeroshot.shapes.evaluate import held_out_scenes
from fiftyone_clip_zeroshot.shapes.world import render_scene

pytestmark = pytest.mark.slow  # photo instruments: the full tier only

REPO = Path(__file__).resolve().parents[1]
BUDGET = {"sliding_window": 1300, "proposals": 200, "dense": 250}  # encoder crops per photo at defaults (issue 23)


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_installed_photos_load_with_boxes_inside_them():
    photos = installed_photos()
    assert len(photos) == 7 and sum(len(p.boxes) for p in photos) == 23
    for photo in photos:
        width, height = photo.size
        assert photo.image.mode == "RGB" and len(photo.labels) == len(photo.boxes)
        assert (photo.boxes[:, :2] >= 0).all() and (photo.boxes[:, 2] <= width).all()
        assert (photo.boxes[:, 3] <= height).all() and (photo.boxes[:, 2:] > photo.boxes[:, :2]).all()


def test_photo_instrument_on_the_installed_photos_keeps_recall_within_the_budget(capsys, say):
    _benchmark("photos").main(["--sets", "installed", "--methods", *BUDGET, "--device", "cpu"])
    out = capsys.readouterr().out
    say(out)
    rows = {m.group(1): m.groups() for m in re.finditer(
        r"^installed\s+(\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)", out, re.M)}
    assert set(rows) == set(BUDGET)
    for method, (_, images, objects, _candidates, crops, recall50, _recall70) in rows.items():
        assert (int(images), int(objects)) == (7, 23)
        assert float(recall50) >= 0.95 and int(crops) <= BUDGET[method], (method, recall50, crops)


def test_propose_gives_the_candidates_every_method_reads(shapes_model):
    scene = held_out_scenes(1)[0]
    boxes = fz.propose(scene.image)
    width, height = scene.image.size
    assert boxes.dtype == np.float64 and boxes.shape[1] == 4 and len(boxes) > 0
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
    for method in ("proposals", "dense"):
        results = fz.localize(scene.image, ["red circle", "blue square"], shapes_model, method=method)
        assert all(np.array_equal(r.candidates, boxes) for r in results)
    with pytest.raises(fz.OptionsError, match="proposal_tile"):
        fz.propose(scene.image, proposal_tile=8)


def test_tiled_proposals_find_small_objects_the_whole_image_misses():
    scene = render_scene(5, 0, 800, 600, max_objects=12, min_objects=8, sizes=(16, 24))

    def recall(boxes: np.ndarray) -> float:
        return float((sv.box_iou_batch(scene.boxes, boxes).max(1) >= 0.5).mean()) if len(boxes) else 0.0

    assert len(scene.boxes) >= 6
    assert recall(fz.propose(scene.image)) <= 0.5  # segmented at 256 px, a 16-px shape is 5 px
    assert recall(fz.propose(scene.image, **fz.SMALL_OBJECTS)) >= 0.9


def _crops(model, run) -> int:
    """Images the vision tower encoded while ``run()`` ran (runs pass cache=False, so that each
    counts its own reads, not what an earlier one left in the embedding store)."""
    count = [0]
    hook = model.model.vision_model.embeddings.register_forward_hook(
        lambda module, inputs, output: count.__setitem__(0, count[0] + output.shape[0]))
    try:
        run()
    finally:
        hook.remove()
    return count[0]


def test_only_supported_candidates_are_read_and_at_most_max_candidates(shapes_model):
    scene = held_out_scenes(2)[1]
    prompts = ["red circle", "blue square", "green star"]
    crops = {cap: _crops(shapes_model, lambda cap=cap: fz.localize(scene.image, prompts[:1], shapes_model,
                                                                   method="dense", max_candidates=cap, cache=False))
             for cap in (1, 2, 10_000)}
    assert crops[1] <= crops[2] < crops[10_000]  # a higher cap reads more boxes (3 crops each; ties go together)
    assert (crops[10_000] - crops[1]) % 3 == 0
    assert (crops[10_000] - crops[1]) // 3 + 1 < len(fz.propose(scene.image))  # not every candidate is supported
    wide = fz.localize(scene.image, prompts, shapes_model, method="sliding_window", max_candidates=10_000)
    default = fz.localize(scene.image, prompts, shapes_model, method="sliding_window")
    for a, b in zip(wide, default):  # the default cap is not reached on a shapes scene: same boxes
        assert np.allclose(a.detections.xyxy, b.detections.xyxy) and np.allclose(a.detections.confidence,
                                                                                  b.detections.confidence)


def test_proposals_alone_read_every_candidate_up_to_the_cap_then_only_the_best_ranked(shapes_model):
    scene, photo = render_scene(2, 0, 512, 384, max_objects=2, min_objects=1), installed_photos()[0]
    few, many = fz.propose(scene.image), fz.propose(photo.image)
    assert len(few) <= 30 < len(many)
    reads = {name: _crops(shapes_model, lambda image=image: fz.localize(image, ["red circle"], shapes_model,
                                                                        method="proposals", cache=False))
             for name, image in (("scene", scene.image), ("photo", photo.image))}
    assert reads["scene"] == 3 * len(few)  # under the cap: every candidate on three crops, no map
    assert 3 * 30 <= reads["photo"] < len(many)  # past it: a cheap map's tiles and the 30 best it ranks (and ties)
    uncapped = _crops(shapes_model, lambda: fz.localize(photo.image, ["red circle"], shapes_model,
                                                        method="proposals", max_candidates=len(many), cache=False))
    assert uncapped == 3 * len(many)


def test_a_crowd_past_max_detections_is_cut_and_said(shapes_model):
    scene = render_scene(3, 1, 512, 384, max_objects=5, min_objects=5, classes=("red circle",), sizes=(50, 90))
    full = fz.localize(scene.image, ["red circle"], shapes_model, method="proposals")[0]
    assert len(full.detections) >= 3 and full.over_cap == 0
    cut = fz.localize(scene.image, ["red circle"], shapes_model, method="proposals", max_detections=1)[0]
    assert len(cut.detections) == 1 and cut.over_cap == len(full.detections) - 1
    assert torch.isclose(torch.tensor(float(cut.detections.confidence[0])),
                         torch.tensor(float(full.detections.confidence.max())))
