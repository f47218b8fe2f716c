"""Images localized together (``core.models.batching``): every method gives each image exactly its
single-image results, failures stay with their image, and the out-of-memory back-off holds on
the shared stream; ``detect`` and ``apply_model`` use it."""

import dataclasses
import threading

import fiftyone as fo
import fiftyone.core.models as fom
import numpy as np
import pytest
import torch

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.core.geometry.images import load_image
from fiftyone_clip_zeroshot.core.localize import localize_batch, localize_tensor
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.core.options import LocalizeOptions
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset
from fiftyone_clip_zeroshot.shapes.world import render_scene

# cache=False: each run encodes every crop itself, so that batched and one-by-one results are two
# computations compared (with the store, the second would read the first's embeddings back)
FAST = dict(window_scales=(0.3, 0.6), window_stride=0.5, context_scales=(0.5,), heatmap_size=64,
            confidence_thresh=0.2, cache=False)
SIZES = [(200, 150), (260, 180), (150, 220)]  # images of different sizes share batches


def _scenes():
    scenes = [render_scene(7, index, width, height) for index, (width, height) in enumerate(SIZES)]
    prompts = sorted({label for scene in scenes for label in scene.labels})
    return [load_image(np.asarray(scene.image)) for scene in scenes], prompts


def _assert_same(single, batched):
    for one, many in zip(single, batched):
        for a, b in zip(one, many):
            assert a.prompt == b.prompt
            np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-5)
            np.testing.assert_allclose(a.detections.xyxy, b.detections.xyxy, atol=1e-5)
            np.testing.assert_allclose(a.detections.confidence, b.detections.confidence, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_a_batch_of_images_gives_each_its_single_image_results(method, shapes_model):
    images, prompts = _scenes()
    opts = LocalizeOptions.create(method=method, batch_size=48, **FAST)
    single = [localize_tensor(pixels, prompts, shapes_model, opts) for pixels in images]
    batched = localize_batch(images, prompts, shapes_model, opts)
    assert sum(len(r.detections) for results in single for r in results) > 0
    _assert_same(single, batched)


def test_an_image_that_fails_fails_alone_and_out_of_memory_halves_the_shared_stream(shapes_model, monkeypatch):
    images, prompts = _scenes()
    opts = LocalizeOptions.create(method="proposals", **FAST)
    single = [localize_tensor(pixels, prompts, shapes_model, opts) for pixels in images]
    model = dataclasses.replace(shapes_model, batch_size=64)
    encode = model.model.get_image_features
    sizes = []

    def small_device(pixel_values, **kwargs):
        sizes.append(len(pixel_values))
        if len(pixel_values) > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encode(pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(model.model, "get_image_features", small_device)
    broken = torch.zeros(3, 0, 0, dtype=torch.uint8)  # no pixels: the localizer cannot run on it
    outcomes = localize_batch([images[0], broken, images[1], images[2]], prompts, model, opts)
    assert isinstance(outcomes[1], Exception)
    _assert_same(single, [outcomes[0], *outcomes[2:]])
    last = max(i for i, size in enumerate(sizes) if size > 16)  # the last batch out of memory
    assert 8 <= model.max_batch <= 16 and max(sizes[last + 1:]) <= model.max_batch  # halved until it fits, for all


def test_ctrl_c_while_images_are_encoded_together_stops_the_run(shapes_model, monkeypatch):
    """An interrupt during a shared batch is the run's, not one image's failure: it propagates,
    and every image's thread ends."""
    images, prompts = _scenes()
    encode, calls = type(shapes_model).encode_batches, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return encode(self, *args, **kwargs)

    monkeypatch.setattr(type(shapes_model), "encode_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        localize_batch(images, prompts, shapes_model, LocalizeOptions.create(method="sliding_window", **FAST))
    for thread in threading.enumerate():
        if thread.name.startswith("clip-zeroshot-image"):
            thread.join(timeout=10)
            assert not thread.is_alive()


def test_detect_and_apply_model_batch_images_with_the_results_of_one_by_one(shapes_model, tmp_root):
    dataset = load_shapes_dataset("batching", 5, tmp_root / "images" / "batching", seed=9, width=240, height=180)
    prompts = ["red circle", "blue square", "green triangle"]
    run = dict(model=shapes_model, method="proposals", heatmaps=False, progress=False, **FAST)
    fz.detect(dataset, prompts, label_field="one", image_batch_size=1, **run)
    fz.detect(dataset, prompts, label_field="three", image_batch_size=3, **run)
    model = fz.zero_shot_model(prompts, model=shapes_model, method="proposals", **FAST)
    batches = []
    predict_all = type(model).predict_all
    model.predict_all = lambda args, samples=None: batches.append(len(args)) or predict_all(model, args, samples)
    dataset.apply_model(model, label_field="applied", batch_size=4)
    assert batches == [4, 1], "apply_model hands the model 4 images at once"

    def boxes(field):
        labels = dataset.values(f"{field}.detections")
        return [[(d.label, d.bounding_box, d.confidence) for d in (x or [])] for x in labels]

    assert sum(map(len, boxes("one"))) > 0 and boxes("three") == boxes("one") == boxes("applied")
    if isinstance(model, fom.TorchModelMixin):  # the DataLoader variant, its workers decoding
        batches.clear()
        dataset.apply_model(model, label_field="loaded", batch_size=3, num_workers=1)
        assert batches == [3, 2] and boxes("loaded") == boxes("one")
    with pytest.raises(fz.OptionsError, match="image_batch_size must be a positive integer"):
        fz.detect(dataset, prompts, label_field="bad", image_batch_size=0, **run)
    assert not dataset.has_field("bad")
    fo.delete_dataset("batching")
