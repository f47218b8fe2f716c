"""The remote zoo source (``zoo/``), registered the way users do, from an archive of this repository
served on loopback, then loaded with ``foz.load_zoo_model`` and applied with ``apply_model``."""

import json
from pathlib import Path

import fiftyone.zoo as foz
import pytest

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset

REPO = Path(__file__).resolve().parents[1]
FAST = dict(window_scales=(0.25, 0.5), window_stride=0.5, confidence_thresh=0.0)


def test_manifest_offers_one_zoo_model_per_localizer():
    manifest = json.loads((REPO / "zoo" / "manifest.json").read_text())
    names = [m["base_name"] for m in manifest["models"]]
    assert names == [*("clip-zeroshot-" + m.replace("_", "-") for m in METHODS), "clip-zeroshot-embeddings"], \
        "zoo/manifest.json is out of date"


def test_zoo_model_from_a_registered_source_labels_a_dataset(zoo_source, shapes_model, tmp_root):
    source_url = zoo_source
    assert source_url in foz.list_zoo_model_sources()
    assert {"clip-zeroshot-sliding-window", "clip-zeroshot-dense"} <= set(foz.list_zoo_models(source=source_url))
    model = foz.load_zoo_model("clip-zeroshot-sliding-window", prompts="red circle, blue square",
                               clip_model="shapes-world", device="cpu", **FAST)
    assert isinstance(model, fz.ClipZeroShotModel) and model.prompts == ["red circle", "blue square"]
    assert model.options.method == "sliding_window"
    dataset = load_shapes_dataset("zoo", 2, tmp_root / "images" / "zoo", seed=5, width=256, height=192)
    dataset.apply_model(model, label_field="zoo")
    direct = fz.zero_shot_model(["red circle", "blue square"], model=shapes_model, **FAST)
    for sample in dataset:
        expected = direct.predict(sample.filepath, sample)
        assert [(d.label, d.bounding_box) for d in sample.zoo.detections] == \
               [(d.label, d.bounding_box) for d in expected.detections]
    with pytest.raises(ValueError, match="needs prompts"):
        foz.load_zoo_model("clip-zeroshot-dense", clip_model="shapes-world")
    dataset.delete()


def test_the_install_command_registers_the_source_offline(zoo_source):
    from fiftyone_clip_zeroshot.plugin.install import install_zoo_source

    try:
        url = install_zoo_source()
        assert url == REPO.as_uri() and url in foz.list_zoo_model_sources()
        assert "clip-zeroshot-embeddings" in foz.list_zoo_models(source=url)
        model = foz.load_zoo_model("clip-zeroshot-embeddings", clip_model="shapes-world", device="cpu")
        assert model.embed_prompts(["a red circle"]).shape[0] == 1
    finally:
        foz.register_zoo_model_source(zoo_source, overwrite=True)  # the other tests' source again
