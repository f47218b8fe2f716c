"""Test setup: FiftyOne and Hugging Face point at temporary folders, never the user's own."""

import os
import tempfile
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="clip-zeroshot-tests-"))
os.environ.update(
    FIFTYONE_DATABASE_DIR=str(_ROOT / "db"),
    FIFTYONE_DEFAULT_DATASET_DIR=str(_ROOT / "datasets"),
    FIFTYONE_DATASET_ZOO_DIR=str(_ROOT / "zoo-datasets"),
    FIFTYONE_MODEL_ZOO_DIR=str(_ROOT / "zoo-models"),
    FIFTYONE_PLUGINS_DIR=str(_ROOT / "plugins"),
    FIFTYONE_CONFIG_PATH=str(_ROOT / "fiftyone-config.json"),
    FIFTYONE_DO_NOT_TRACK="true",
    HF_HOME=str(_ROOT / "hf"),
    HF_HUB_OFFLINE="1",
)

import pytest  # noqa: E402

from fiftyone_clip_zeroshot import load_model  # noqa: E402


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return _ROOT


@pytest.fixture(scope="session")
def shapes_model():
    """The shipped shapes-world CLIP, loaded through the same path as any hub checkpoint."""
    return load_model("shapes-world", device="cpu")
