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
import fiftyone as fo  # noqa: E402

from fiftyone_clip_zeroshot import load_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return _ROOT


@pytest.fixture(scope="session")
def shapes_model():
    """The shipped shapes-world CLIP, loaded through the same path as any hub checkpoint."""
    return load_model("shapes-world", device="cpu")


@pytest.fixture(scope="session")
def plugin_dir(tmp_root):
    """The repository itself, linked into the temp plugins dir, as a user would clone it there."""
    link = Path(fo.config.plugins_dir) / "fiftyone-clip-zeroshot"
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    return link
