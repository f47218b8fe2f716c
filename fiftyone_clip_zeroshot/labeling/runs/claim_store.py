"""One writer per label field: a claim is a document of the plugin's own collection in FiftyOne's
database, keyed by dataset and field and taken with one atomic insert, so that of two runs that
start in the same instant exactly one gets the field.

A claim names its run and carries heartbeats: the process of an unsharded run, and the worker of
each running shard, beat it from a background thread every ``HEARTBEAT_EVERY`` s (a sign that
the process lives, not of progress: one slow image does not stop it). A claim is released when
its run ends; one whose beats stopped is taken over by a compare-and-set on its last beat, so two
successors cannot both take it. Whether a holder is gone is the policy of ``claims``.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import psutil
from fiftyone.core.odm import get_db_conn
from pymongo.errors import DuplicateKeyError, PyMongoError

COLLECTION = "clip_zeroshot_claims"
# Seconds without a heartbeat after which a running run or shard is taken as lost. A machine
# whose clock is off by more than a few seconds (no NTP) needs a larger value; tests use a smaller.
STALE_AFTER = float(os.environ.get("CLIP_ZEROSHOT_STALE_AFTER", 60))
HEARTBEAT_EVERY = min(10.0, STALE_AFTER / 6)


@dataclass
class Claim:
    """The claim on one label field: the run holding it, its owner (``"host pid N"``, or
    ``SHARDED`` for a sharded run, whose shards beat ``shards[index]`` instead) and last beat."""

    key: str
    run_id: str
    owner: str
    heartbeat: datetime
    shards: dict[str, dict[str, Any]] = field(default_factory=dict)  # index → {"owner", "heartbeat"}

    @classmethod
    def _from(cls, doc: dict) -> Claim:
        shards = {index: {**beat, "heartbeat": utc(beat["heartbeat"])} for index, beat in doc.get("shards", {}).items()}
        return cls(doc["_id"], doc["run_id"], doc["owner"], utc(doc["heartbeat"]), shards)


SHARDED = "shards"


def claim_key(dataset_name: str, label_field: str) -> str:
    return f"{dataset_name}/{label_field}"


def insert(key: str, run_id: str, owner: str) -> Claim | None:
    """Take the free claim ``key`` for ``run_id`` (one atomic insert); None when it was free and is
    now ours, else the claim that holds it."""
    try:
        _collection().insert_one(dict(_id=key, run_id=run_id, owner=owner, heartbeat=now(), shards={}))
    except DuplicateKeyError:
        holder = read(key)
        return holder or insert(key, run_id, owner)  # released between the two calls: try again
    return None


def take_over(holder: Claim, run_id: str, owner: str) -> bool:
    """Replace ``holder`` (a gone run) with ``run_id``: only if it is still as read, so of several
    successors exactly one wins."""
    replaced = _collection().find_one_and_update(
        {"_id": holder.key, "run_id": holder.run_id, "heartbeat": holder.heartbeat},
        {"$set": dict(run_id=run_id, owner=owner, heartbeat=now(), shards={})})
    return replaced is not None


def read(key: str) -> Claim | None:
    doc = _collection().find_one({"_id": key})
    return Claim._from(doc) if doc else None


def release(key: str, run_id: str) -> None:
    """Give the claim back, if ``run_id`` still holds it."""
    _collection().delete_one({"_id": key, "run_id": run_id})


def beat(key: str, run_id: str, shard: int | None = None) -> None:
    """A heartbeat of the run (or of its shard ``shard``, run by this process) on its claim."""
    update = {"heartbeat": now()} if shard is None else {f"shards.{shard}": dict(owner=this_process(), heartbeat=now())}
    _collection().update_one({"_id": key, "run_id": run_id}, {"$set": update})


def stale(heartbeat: datetime, owner: str) -> str | None:
    """Why a process that beat last at ``heartbeat`` is gone (None if it is not): its pid is gone
    from this machine, or it has not beaten for ``STALE_AFTER`` s."""
    host, _, pid = owner.rpartition(" pid ")
    if host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid)):
        return f"its process ({owner}) is gone"
    age = (now() - heartbeat).total_seconds()
    if age >= STALE_AFTER:
        return f"no heartbeat for {age:.0f} s (limit {STALE_AFTER:.0f} s)"
    return None


class Heartbeat:
    """Calls ``beat`` every ``HEARTBEAT_EVERY`` s from a daemon thread while in the ``with`` block;
    a beat that fails (the database away for a moment) is tried again at the next."""

    def __init__(self, beat: Callable[[], None]):
        self._beat = beat
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="clip-zeroshot-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            try:
                self._beat()
            except PyMongoError:
                continue


def now() -> datetime:
    return datetime.now(timezone.utc)


def this_process() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


def utc(moment: datetime) -> datetime:
    """A time read back from the database (naive UTC) as an aware one."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _collection():
    return get_db_conn()[COLLECTION]
