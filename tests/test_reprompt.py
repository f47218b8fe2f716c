"""A dataset re-prompted from the embedding store: images it has seen are not decoded (stand-ins,
``embedding_store.stand_in``), and their labels are exactly those of a run that decodes them, on
every panel model and method; a stand-in whose entry lacks a crop is decoded after all."""

import numpy as np
import pytest
from PIL import Image

from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.core.models.model import PACKAGED_MODELS
from fiftyone_clip_zeroshot.labeling.runs import jobs
from fiftyone_clip_zeroshot.labeling.runs.detect import DetectJob
from fiftyone_clip_zeroshot.labeling.runs.labels import heatmap_fields
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset

PROMPTS = ["red circle", "blue square"]
NEW_PROMPTS = ["yellow star", "green triangle", "red circle"]
RUN = dict(window_scales=(0.2, 0.5), window_stride=0.5, context_scales=(0.25, 0.5), heatmap_size=48,
           verify_margins=(0.1,), proposal_scales=(300,),
           embed_all_candidates=True, device="cpu")


@pytest.fixture(scope="module")
def scenes(tmp_root):
    dataset = load_shapes_dataset("reprompt", 2, tmp_root / "images" / "reprompt", seed=4, width=240, height=180,
                                  classes=tuple(dict.fromkeys(PROMPTS + NEW_PROMPTS)))
    yield dataset
    dataset.delete()


def _run(samples, prompts, field, decode: bool, **options) -> DetectJob:
    job = DetectJob(samples, prompts, label_field=field, **RUN, **options)
    if decode:  # the path without stand-ins: every image decoded
        job.image_of = lambda path: jobs.SampleJob.image_of(job, path)
    jobs.run_job(job, progress=False)
    assert not job.failures, job.failures
    return job


def _labels(samples, field: str, prompts: list[str]) -> tuple[list, list]:
    boxes = [[(d.label, d.bounding_box, d.confidence) for d in x.detections] for x in samples.values(field)]
    maps = [[m.map for m in maps] for maps in zip(*(samples.values(f) for f in heatmap_fields(field, prompts)))]
    return boxes, maps


@pytest.mark.parametrize("model", list(PACKAGED_MODELS))
def test_new_prompts_read_from_the_store_label_as_a_run_that_decodes(scenes, model, tmp_path, monkeypatch):
    decoded, load = [], jobs.load_image
    monkeypatch.setattr(jobs, "load_image", lambda path: decoded.append(path) or load(path))
    boxes_seen = 0
    for method in METHODS:
        cache = str(tmp_path / method)
        _run(scenes, PROMPTS, f"cold_{method}", True, model=model, method=method, cache=cache)
        decoded.clear()
        warm = _run(scenes, NEW_PROMPTS, f"warm_{method}", False, model=model, method=method, cache=cache)
        assert bool(decoded) == (warm.crops.computed > 0), (method, warm.crops, decoded)  # decoded if, and only if
        if method != "occlusion":  # the store holds every crop (occlusion's occluded crops follow the prompts)
            assert warm.crops.computed == 0, (method, warm.crops)
        _run(scenes, NEW_PROMPTS, f"decoded_{method}", True, model=model, method=method, cache=cache)
        got, want = _labels(scenes, f"warm_{method}", NEW_PROMPTS), _labels(scenes, f"decoded_{method}", NEW_PROMPTS)
        assert got[0] == want[0], method
        for a, b in zip(got[1], want[1]):
            for map_a, map_b in zip(a, b):
                np.testing.assert_allclose(map_a, map_b, atol=1e-6, rtol=0)
        boxes_seen += sum(map(len, got[0]))
    assert boxes_seen > 0


def test_an_image_whose_file_changed_is_decoded_again(scenes, tmp_path):
    """The file notes map path, size and mtime to the decoded image: a rewritten file is decoded."""
    copy = scenes.clone("reprompt-changed")
    cache = str(tmp_path / "store")
    _run(copy, PROMPTS, "first", False, model="shapes-world", method="proposals", cache=cache)
    path = copy.first().filepath
    Image.open(path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(path, quality=95)
    again = _run(copy, PROMPTS, "second", False, model="shapes-world", method="proposals", cache=cache)
    assert again.crops.computed > 0  # the flipped image's crops were encoded, not read from the old entry
    _run(copy, PROMPTS, "plain", True, model="shapes-world", method="proposals", cache=False)
    (got, _), (want, _) = _labels(copy, "second", PROMPTS), _labels(copy, "plain", PROMPTS)
    assert [[(label, box) for label, box, _ in boxes] for boxes in got] == \
        [[(label, box) for label, box, _ in boxes] for boxes in want]
    np.testing.assert_allclose([c for boxes in got for *_, c in boxes], [c for boxes in want for *_, c in boxes],
                               atol=1e-4)
    copy.delete()
