"""A throwaway deployment on one machine, for the multi-worker tests and ``workers.py``: one
``mongod`` on loopback (the binary FiftyOne's database wheel installs) and ``fiftyone delegated
launch`` workers pointed at it, each a process group stopped by its pid.

It stands in for N GPU machines sharing one MongoDB; the plugin itself adds no scheduler.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from fiftyone.core.service import DatabaseService
from pymongo import MongoClient

REPO = Path(__file__).resolve().parents[1]
FIFTYONE = str(Path(sys.executable).with_name("fiftyone"))


class LocalMongo:
    """``mongod`` on 127.0.0.1 with its data in ``root/db``; ``start`` again after ``kill`` to
    reopen the same data."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.port = _free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/?serverSelectionTimeoutMS=10000"  # fail in 10 s, not 30
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> LocalMongo:
        (self.root / "db").mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [DatabaseService.find_mongod(), "--dbpath", str(self.root / "db"), "--port", str(self.port),
             "--bind_ip", "127.0.0.1", "--nounixsocket", "--logpath", str(self.root / "mongod.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                MongoClient(self.uri, serverSelectionTimeoutMS=500).admin.command("ping")
                return self
            except Exception:  # noqa: BLE001 - not up yet
                if self.process.poll() is not None:
                    log = self.root / "mongod.log"
                    raise RuntimeError(f"mongod exited ({self.process.returncode}); see {log}") from None
                time.sleep(0.2)
        raise TimeoutError(f"mongod did not answer within {timeout}s")

    def kill(self) -> None:
        """Stop it the hard way (power loss, OOM kill)."""
        stop(self.process, signal.SIGKILL)

    def stop(self) -> None:
        stop(self.process)

    def operations(self) -> list[dict]:
        """The delegated operations in the database, straight from MongoDB (no FiftyOne import)."""
        client = MongoClient(self.uri, serverSelectionTimeoutMS=5000)
        try:
            return list(client["fiftyone"]["delegated_ops"].find({}, {"run_state": 1, "status": 1, "label": 1}))
        finally:
            client.close()


def environment(mongo: LocalMongo, root: Path) -> dict[str, str]:
    """What every process of this deployment shares: the database, the plugin installed in a
    plugins folder (the repository linked there, as a user would clone it), and an embedding store
    of its own (never the user's, nor another deployment's)."""
    plugins = Path(root) / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    if not (plugins / "fiftyone-clip-zeroshot").exists():
        (plugins / "fiftyone-clip-zeroshot").symlink_to(REPO, target_is_directory=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("FIFTYONE_")}
    return {**env, "FIFTYONE_DATABASE_URI": mongo.uri, "FIFTYONE_PLUGINS_DIR": str(plugins),
            "FIFTYONE_DEFAULT_DATASET_DIR": str(Path(root) / "datasets"), "FIFTYONE_DO_NOT_TRACK": "true",
            "FIFTYONE_CONFIG_PATH": str(Path(root) / "fiftyone-config.json"), "HF_HUB_OFFLINE": "1",
            "FIFTYONE_CLIP_ZEROSHOT_CACHE_DIR": str(Path(root) / "embeddings"),
            "PYTHONPATH": str(REPO)}


def start_worker(env: dict[str, str], log: Path, threads: int | None = None) -> subprocess.Popen:
    """``fiftyone delegated launch`` in its own process group, its output in ``log``."""
    extra = {"OMP_NUM_THREADS": str(threads)} if threads else {}
    with open(log, "w") as out:
        return subprocess.Popen([FIFTYONE, "delegated", "launch"], env={**env, **extra}, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def python(env: dict[str, str], script: str, timeout: float = 600) -> dict:
    """Run ``script`` in a fresh interpreter of this deployment; it prints one JSON line last."""
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"script failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def wait_for(condition, timeout: float, what: str, every: float = 0.2):
    """Poll ``condition()`` until it returns something true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout}s")


def stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop ``process`` and its group (SIGKILL after ``timeout``); a no-op once it has exited."""
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig)
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
