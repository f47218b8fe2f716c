"""One ``detect`` run split over N delegated operations (shards), one per worker, on FiftyOne's
own machinery: each shard is a queued detect operation over a disjoint range of sample ids,
which any ``fiftyone delegated launch`` sharing the database claims (atomically, once).

The run's record (``runs.DetectRun``) holds the shards and what every shard must do; a shard
reads it (``DetectJob.shard``), so reruns do the same work. The run holds its field's claim
(``claims``) for all its shards, and each running shard beats its part of it. Each shard's state
is its operation's, or ``lost`` once its worker's beats stop: ``run_status`` reads them back, and
``requeue`` runs the lost and failed ones again.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import fiftyone as fo
import numpy as np
from bson import ObjectId
from fiftyone import ViewField as F
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionContext, ExecutionResult, ExecutionRunState

from fiftyone_clip_zeroshot.labeling import claims
from fiftyone_clip_zeroshot.labeling.fo_private import declare_fields, serialized_view
from fiftyone_clip_zeroshot.labeling.jobs import LabelingError, dataset_name
from fiftyone_clip_zeroshot.labeling.runs import DetectRun

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.labeling.detect import DetectJob

DETECT_URI = "@clip-zeroshot/fiftyone-clip-zeroshot/detect"
ACTIVE = ("queued", "scheduled", "running")  # operation states that may still write labels
RECOVERABLE = ("lost", "failed", "missing")  # shard states that ``requeue`` runs again

logger = logging.getLogger(__name__)


@dataclass
class ShardStatus:
    """One shard: its samples, its operation's state and how many samples it has labelled."""

    index: int
    samples: int
    state: str  # queued | scheduled | running | lost (no heartbeat) | completed | failed | missing (deleted)
    done: int
    operation_id: str | None
    error: str | None = None


@dataclass
class RunStatus:
    """Where the run that writes ``label_field`` stands; ``shards`` is empty for an unsharded run."""

    label_field: str
    run_id: str
    state: str  # running | done | failed | stopped | lost | queued
    shards: list[ShardStatus]

    def __str__(self) -> str:
        lines = [f"run {self.run_id} on {self.label_field!r}: {self.state}"]
        if self.shards:
            done, total = sum(s.done for s in self.shards), sum(s.samples for s in self.shards)
            counts = {state: sum(s.state == state for s in self.shards) for state in dict.fromkeys(
                s.state for s in self.shards)}
            lines[0] += f" ({', '.join(f'{n} {state}' for state, n in counts.items())}; {done}/{total} samples)"
            lines += [f"  shard {s.index + 1}: {s.state:<9} {s.done}/{s.samples} samples  operation {s.operation_id}"
                      + (f"  {s.error}" if s.error else "") for s in self.shards]
        return "\n".join(lines)


def queue_shards(job: DetectJob, shards: int, device: str | None = None,
                 delegation_target: str | None = None) -> DetectRun | None:
    """Record ``job`` as a sharded run and queue ``shards`` detect operations over balanced,
    disjoint ranges of its sample ids; ``device`` is each worker's (None: its GPU if it has one).
    The run claims its field for all its shards (``claim_field``). None, with nothing queued or
    recorded, when the job has no samples (``skip_existing`` and every sample labelled)."""
    samples = job.samples
    if not isinstance(shards, int) or shards < 1:
        raise LabelingError(f"shards must be a positive integer, got {shards!r}")
    if not fo.load_dataset(dataset_name(samples)).persistent:
        raise LabelingError("shards run in other processes (delegated operations), which only see persistent "
                            "datasets: set dataset.persistent = True first")
    ids = sorted(samples.values("id"))
    if not ids:
        return None
    ranges = [chunk for chunk in np.array_split(np.array(ids), min(shards, len(ids))) if len(chunk)]
    plan = [dict(index=i, samples=len(chunk), first_id=str(chunk[0]), last_id=str(chunk[-1]), operation_id=None)
            for i, chunk in enumerate(ranges)]
    key = claim_field(samples, job.label_field, job.run_id, sharded=True)
    run = job.record(state="sharded", shards=plan)
    service = DelegatedOperationService()
    queued = []
    try:
        run.save(samples)
        declare_fields(samples, job.field_types)
        for shard in plan:
            queued.append(_queue(service, samples, run, shard, len(plan), device, delegation_target))
            shard["operation_id"] = queued[-1]
    except BaseException:
        for operation_id in queued:  # all shards or none
            service.delete_operation(ObjectId(operation_id))
        with contextlib.suppress(Exception):  # the database may be what failed
            run.update(samples, state="failed")
            claims.release(key, run.run_id)
        raise
    run.update(samples, shards=plan)
    return run


def _queue(service: DelegatedOperationService, samples: fo.core.collections.SampleCollection, run: DetectRun,
           shard: dict, count: int, device: str | None = None, delegation_target: str | None = None) -> str:
    """Queue the detect operation of one shard of ``run``; returns its id."""
    params = dict(label_field=run.label_field, shard_of=run.run_id, shard=shard["index"], device=device, delegate=True)
    context = ExecutionContext(request_params=dict(
        dataset_name=dataset_name(samples), view=serialized_view(shard_view(samples, shard)), params=params,
        delegated=True))
    operation = service.queue_operation(operator=DETECT_URI, context=context, delegation_target=delegation_target,
                                        label=f"CLIP zero-shot: {run.label_field} shard {shard['index'] + 1}/{count}")
    return str(operation.id)


def shard_view(samples: fo.core.collections.SampleCollection, shard: dict) -> fo.DatasetView:
    """The samples of ``shard``: its id range within the run's target (ids are fixed-width hex,
    so string order is id order)."""
    sample_id = F("_id").to_string()
    return samples.match((sample_id >= shard["first_id"]) & (sample_id <= shard["last_id"]))


def run_status(samples: fo.core.collections.SampleCollection, label_field: str) -> RunStatus:
    """The state of the run recorded on ``label_field``: for a sharded run, each shard's (from its
    newest operation, so a rerun replaces a failed or killed one) and the samples it labelled. A
    run or shard that is running but whose heartbeat is older than ``claims.STALE_AFTER`` (or
    whose process is gone from this machine) is ``lost``: ``requeue`` runs lost shards again."""
    run = DetectRun.load(samples, label_field)
    if run is None:
        raise LabelingError(f"no detect run is recorded on {label_field!r}")
    holder = claims.read(claims.claim_key(dataset_name(samples), label_field))
    if not run.shards:
        ours = holder is not None and holder.run_id == run.run_id
        lost = run.state == "running" and (not ours or _gone(samples, holder, run) is not None)
        return RunStatus(label_field, run.run_id, "lost" if lost else run.state, [])
    shards = shard_states(samples, run, holder)
    states = {s.state for s in shards}
    state = ("failed" if states & {"failed", "missing"} else "lost" if "lost" in states
             else "running" if "running" in states else "queued" if states & set(ACTIVE) else "done")
    return RunStatus(label_field, run.run_id, state, shards)


def shard_states(samples: fo.core.collections.SampleCollection, run: DetectRun,
                 holder: claims.Claim | None) -> list[ShardStatus]:
    """Each shard of ``run`` as its newest operation reports it, ``lost`` where that operation
    runs but its worker's heartbeats on the claim ``holder`` stopped."""
    newest = {}
    for operation in DelegatedOperationService().list_operations(operator=DETECT_URI,
                                                                 dataset_name=dataset_name(samples)):
        params = (operation.context.request_params or {}).get("params", {}) if operation.context else {}
        if params.get("shard_of") == run.run_id:
            index = params.get("shard")
            if index not in newest or operation.queued_at > newest[index].queued_at:
                newest[index] = operation
    beats = holder.shards if holder and holder.run_id == run.run_id else {}
    return [_shard_status(shard, newest.get(shard["index"]), beats.get(str(shard["index"])))
            for shard in run.shards]


def _shard_status(shard: dict, operation, beat: dict | None) -> ShardStatus:
    if operation is None:
        return ShardStatus(shard["index"], shard["samples"], "missing", 0, shard.get("operation_id"))
    state = str(operation.run_state)
    summary = operation.result.result if operation.result and operation.result.result else None
    if summary:
        done = summary["samples"] - summary["failed"]
    else:
        progress = operation.status.progress if operation.status else None
        done = round((progress or 0) * shard["samples"])
    error = operation.result.error.strip().splitlines()[-1] if operation.result and operation.result.error else None
    if state == "running":
        started = claims.utc(operation.started_at or operation.queued_at)
        if beat is None or beat["heartbeat"] < started:  # none yet from this operation's worker
            beat = dict(heartbeat=started, owner="its worker")
        error = claims.stale(beat["heartbeat"], beat["owner"])
        state = "lost" if error else state
    return ShardStatus(shard["index"], shard["samples"], state, done, str(operation.id), error)


def check_free(samples: fo.core.collections.SampleCollection, label_field: str) -> None:
    """Refuse at once a run on a label field that another run still writes (naming that run); the
    claim itself is taken when the run starts (``claim_field``)."""
    holder = claims.read(claims.claim_key(dataset_name(samples), label_field))
    if holder is not None and _gone(samples, holder) is None:
        raise LabelingError(_busy(samples, holder, label_field))


def claim_field(samples: fo.core.collections.SampleCollection, label_field: str, run_id: str,
                sharded: bool = False) -> str:
    """Take the one claim on ``label_field`` for ``run_id`` (atomically), or raise
    ``LabelingError`` naming the run that holds it; a holder that is gone (no heartbeat for
    ``STALE_AFTER`` s, its process gone, or all its shards ended) is taken over. Returns the key."""
    key = claims.claim_key(dataset_name(samples), label_field)
    owner = claims.SHARDED if sharded else claims.this_process()
    holder = claims.insert(key, run_id, owner)
    while holder is not None:
        reason = _gone(samples, holder)
        if reason is None:
            raise LabelingError(_busy(samples, holder, label_field))
        if claims.take_over(holder, run_id, owner):
            if not reason.startswith("its shards ended"):
                logger.warning("%r: took over the claim of run %s (%s)", label_field, holder.run_id, reason)
            return key
        holder = claims.insert(key, run_id, owner)  # someone else moved first: look again
    return key


def _gone(samples: fo.core.collections.SampleCollection, holder: claims.Claim | None,
          run: DetectRun | None = None) -> str | None:
    """Why the run holding ``holder`` no longer writes its field (None while it does)."""
    if holder is None:
        return "it holds no claim"
    if holder.owner != claims.SHARDED:
        return claims.stale(holder.heartbeat, holder.owner)
    label_field = holder.key.rpartition("/")[2]
    run = run or DetectRun.load(samples, label_field)
    if run is None or run.run_id != holder.run_id:
        return "its record was replaced"
    if any(s.state in ACTIVE for s in shard_states(samples, run, holder)):
        return None
    return "its shards ended (done, failed or lost)"


def _busy(samples: fo.core.collections.SampleCollection, holder: claims.Claim, label_field: str) -> str:
    limit = f"{claims.STALE_AFTER:.0f} s"
    if holder.owner != claims.SHARDED:
        return (f"{label_field!r} is being written by run {holder.run_id} ({holder.owner}, last heartbeat "
                f"{holder.heartbeat.isoformat(timespec='seconds')}); wait for it to end or choose another "
                f"label_field (a run whose process is gone, or without a heartbeat for {limit}, is taken over)")
    run = DetectRun.load(samples, label_field)
    active = [s for s in shard_states(samples, run, holder) if s.state in ACTIVE]
    ids = ", ".join(s.operation_id for s in active)
    return (f"{label_field!r} is being written by sharded run {holder.run_id}: {len(active)} of {len(run.shards)} "
            f"shards are still queued or running (operations {ids}). Wait for them (fz.run_status), choose another "
            f"label_field, or, for shards whose worker died (lost after {limit} without a heartbeat), fz.requeue")


def requeue(samples: fo.core.collections.SampleCollection, label_field: str) -> RunStatus:
    """Run the lost and failed shards of the sharded run on ``label_field`` again, in one call: a
    lost shard's operation is marked failed, and each gets a new queued operation (a deleted
    one is queued anew) for any ``fiftyone delegated launch`` worker. Returns the new status.

    Args:
        samples: the dataset (or a view of it) the run labels.
        label_field: the field of the sharded run.
    """
    status = run_status(samples, label_field)
    run = DetectRun.load(samples, label_field)
    if not run.shards:
        raise LabelingError(f"run {run.run_id} on {label_field!r} is not sharded: rerun detect with "
                            "skip_existing=True to finish it")
    service = DelegatedOperationService()
    for shard in status.shards:
        if shard.state == "lost" and service.set_failed(
                ObjectId(shard.operation_id), result=ExecutionResult(error=f"lost: {shard.error}"),
                required_state=ExecutionRunState.RUNNING) is None:
            continue  # it ended meanwhile
        if shard.state in ("lost", "failed"):
            service.rerun_operation(ObjectId(shard.operation_id))
        elif shard.state == "missing":
            _queue(service, samples, run, run.shards[shard.index], len(run.shards))
    return run_status(samples, label_field)
