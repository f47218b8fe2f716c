"""The remote zoo source (``zoo/``), registered the way users do, from an archive of this repository
served on loopback, then loaded with ``foz.load_zoo_model`` and applied with ``apply_model``."""

import json
import subprocess
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import fiftyone.zoo as foz
import pytest

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset

REPO = Path(__file__).resolve().parents[1]
FAST = dict(window_scales=(0.25, 0.5), window_stride=0.5, confidence_thresh=0.0)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def source_url(tmp_root):
    """A zip of the repository's files (as ``git ls-files`` lists them), served from 127.0.0.1."""
    folder = tmp_root / "zoo-archive"
    folder.mkdir(exist_ok=True)
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split()
    with zipfile.ZipFile(folder / "fiftyone-clip-zeroshot.zip", "w") as archive:
        for name in files:
            if (REPO / name).is_file() and not name.endswith(".safetensors"):
                archive.write(REPO / name, f"fiftyone-clip-zeroshot/{name}")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/fiftyone-clip-zeroshot.zip"
    server.shutdown()


def test_manifest_offers_one_zoo_model_per_localizer():
    manifest = json.loads((REPO / "zoo" / "manifest.json").read_text())
    names = [m["base_name"] for m in manifest["models"]]
    assert names == ["clip-zeroshot-" + m.replace("_", "-") for m in METHODS], "zoo/manifest.json is out of date"


def test_zoo_model_from_a_registered_source_labels_a_dataset(source_url, shapes_model, tmp_root):
    foz.register_zoo_model_source(source_url, overwrite=True)
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
