"""Test setup: FiftyOne and Hugging Face point at temporary folders, never the user's own."""

import os
import subprocess
import sys
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
    FIFTYONE_DATABASE_VALIDATION="false",  # no notice about the embedded mongod 6.0.5 in every subprocess
    HF_HOME=str(_ROOT / "hf"),
    HF_HUB_OFFLINE="1",
)

import psutil  # noqa: E402
import pytest  # noqa: E402

from fiftyone_clip_zeroshot import load_model  # noqa: E402
from fiftyone_clip_zeroshot.plugin.install import install_plugin  # noqa: E402

_CLEANUP = """
import shutil, sys
import psutil
procs = []
for pid in sys.argv[2:]:
    try:
        procs.append(psutil.Process(int(pid)))
    except psutil.NoSuchProcess:
        pass
psutil.wait_procs(procs, timeout=120)
shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """pytest's own temporary folders (``tmp_path``, mongod data dirs among them) go under the
    temporary root too, so they are removed with it instead of piling up in the system temp dir."""
    if not config.option.basetemp:
        config.option.basetemp = str(_ROOT / "pytest")


def pytest_unconfigure(config):
    """Leave nothing behind (database, datasets, heatmaps, plugin link): a detached process
    removes the temporary folder once this one and its embedded MongoDB have exited, since
    MongoDB aborts when its folder goes while it runs."""
    pids = [os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))]
    subprocess.Popen([sys.executable, "-c", _CLEANUP, str(_ROOT), *map(str, pids)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def say(request):
    """Print a line at once, past pytest's capture: progress inside a long fixture."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")

    def write(message: str) -> None:
        if reporter is not None:
            reporter.write_line(message)

    return write


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return _ROOT


@pytest.fixture(scope="session")
def shapes_model():
    """The shipped shapes-world CLIP, loaded through the same path as any hub checkpoint."""
    return load_model("shapes-world", device="cpu")


@pytest.fixture(scope="session")
def plugin_dir(tmp_root):
    """The repository itself, linked into the temp plugins dir as the demo command links it."""
    return install_plugin()
