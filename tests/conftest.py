"""Test setup: FiftyOne and Hugging Face point at temporary folders and a ``mongod`` of the tests'
own, never the user's. (FiftyOne's embedded database attaches to any FiftyOne database service
already running on the machine, whatever its folder, so a temporary database folder alone would
put the tests' datasets into a running App's database.)"""

import importlib.util
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_ROOT = Path(tempfile.mkdtemp(prefix="clip-zeroshot-tests-"))
os.environ.update(
    FIFTYONE_DEFAULT_DATASET_DIR=str(_ROOT / "datasets"),
    FIFTYONE_DATASET_ZOO_DIR=str(_ROOT / "zoo-datasets"),
    FIFTYONE_MODEL_ZOO_DIR=str(_ROOT / "zoo-models"),
    FIFTYONE_PLUGINS_DIR=str(_ROOT / "plugins"),
    FIFTYONE_CONFIG_PATH=str(_ROOT / "fiftyone-config.json"),
    FIFTYONE_DO_NOT_TRACK="true",
    FIFTYONE_DATABASE_VALIDATION="false",  # no notice about the embedded mongod 6.0.5 in every subprocess
    HF_HOME=str(_ROOT / "hf"),
    FIFTYONE_CLIP_ZEROSHOT_CACHE_DIR=str(_ROOT / "embeddings"),
    HF_HUB_OFFLINE="1",
)

import fiftyone as fo  # noqa: E402
import fiftyone.zoo as foz  # noqa: E402
import psutil  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from fiftyone_clip_zeroshot import load_model  # noqa: E402
from fiftyone_clip_zeroshot.plugin.install import install_plugin  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cluster", REPO / "benchmarks" / "cluster.py")
cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cluster)
_MONGO = cluster.LocalMongo(_ROOT / "mongo").start()
os.environ["FIFTYONE_DATABASE_URI"] = fo.config.database_uri = _MONGO.uri  # here and in every subprocess

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


# Two xdist workers share the 2 cores (scripts/test.sh runs ``-n 2``): one torch thread each.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
# Longest first, so that the two workers end together (``--dist loadgroup``): each quality
# evaluation (model, method) is a group of its own, then these modules, then the rest.
HEAVY_FIRST = ["test_workers", "test_app_e2e", "test_fiftyone", "test_benchmarks", "test_training", "test_faults"]


def _group(item: pytest.Item) -> str:
    """The xdist group of a test: its (model, method) evaluation in test_quality, its page in
    test_docs' code runs, else its module (module fixtures are built once)."""
    module = item.module.__name__
    params = getattr(getattr(item, "callspec", None), "params", {})
    if module == "test_quality":
        method = params.get("method") or next((f for f in ("sliding", "occlusion", "proposals", "dense")
                                               if f in item.fixturenames), "")
        owner = params.get("model") or next((f.removesuffix("_model") for f in ("photo_model", "siglip_model")
                                             if f in item.fixturenames), "photo")
        return f"quality-{owner}-{method}" if method or "model" in params else module
    if module == "test_docs" and "page" in params and "demo_dataset" in item.fixturenames:
        return f"docs-{params['page'].name}"
    return module


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Under xdist, group the tests (``_group``) and put the long groups first."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # the workers collect; one process runs in file order
        return
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_group(item)))

    def rank(item: pytest.Item) -> int:
        module = item.module.__name__
        return 0 if module == "test_quality" else 1 + HEAVY_FIRST.index(module) if module in HEAVY_FIRST else 99

    items.sort(key=rank)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids):
    """Stop when xdist did not take the groups (a grouped node id ends in ``@group``): every
    quality evaluation would then be computed once per test that reads it."""
    if node.config.getvalue("dist") == "loadgroup" and ids and not any("@" in nodeid for nodeid in ids):
        pytest.exit(f"xdist kept no test group ({ids[0]}, ...): this pytest and pytest-xdist do not work together; "
                    "rerun scripts/setup.sh to get pyproject's versions", returncode=4)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """pytest's own temporary folders (``tmp_path``, mongod data dirs among them) go under the
    temporary root too, so they are removed with it instead of piling up in the system temp dir."""
    if not config.option.basetemp:
        config.option.basetemp = str(_ROOT / "pytest")


def pytest_unconfigure(config):
    """Leave nothing behind (database, datasets, heatmaps, plugin link): stop the tests' mongod,
    then a detached process removes the temporary folder once this one and its children have
    exited, since MongoDB aborts when its folder goes while it runs."""
    _MONGO.stop()
    pids = [os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))]
    subprocess.Popen([sys.executable, "-c", _CLEANUP, str(_ROOT), *map(str, pids)], start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def say(request):
    """Print a line at once, past pytest's capture: progress inside a long fixture."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")

    def write(message: str) -> None:
        if reporter is not None:
            with capture.global_and_fixture_disabled():
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


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="session")
def zoo_source(tmp_root):
    """This repository's zoo source, registered the way users do: a zip of its files (as ``git
    ls-files`` lists them) served from 127.0.0.1. Yields the source's URL."""
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
    url = f"http://127.0.0.1:{server.server_address[1]}/fiftyone-clip-zeroshot.zip"
    foz.register_zoo_model_source(url, overwrite=True)
    yield url
    server.shutdown()
