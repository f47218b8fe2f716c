"""One ``detect`` run split over N delegated operations (shards), one per worker, on FiftyOne's
own machinery: each shard is a queued detect operation over a disjoint range of sample ids,
which any ``fiftyone delegated launch`` sharing the database claims (atomically, once).

The run's record (``runs.DetectRun``) holds the shards and what every shard must do; a shard's
job is made from it (``shard_job_options``), so reruns do the same work. The run holds its
field's claim (``claims``) for all its shards, and each running shard beats its part of it. Each
shard's state is its operation's, or ``lost`` once its worker's beats stop (``shard_states``):
``run_status`` reads them back, and ``requeue`` runs the lost and failed ones again.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import fiftyone as fo
import numpy as np
from bson import ObjectId
from fiftyone import ViewField as F
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionContext, ExecutionResult, ExecutionRunState

from fiftyone_clip_zeroshot.labeling.fo_private import declare_fields, serialized_view
from fiftyone_clip_zeroshot.labeling.runs import claim_store
from fiftyone_clip_zeroshot.labeling.runs.claims import claim_field, gone
from fiftyone_clip_zeroshot.labeling.runs.jobs import LabelingError, dataset_name
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun
from fiftyone_clip_zeroshot.labeling.runs.shard_states import ACTIVE, DETECT_URI, ShardStatus, shard_states
from fiftyone_clip_zeroshot.labeling.runs.shardable import ShardableRun

RECOVERABLE = ("lost", "failed", "missing")  # shard states that ``requeue`` runs again


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


def queue_shards(job: ShardableRun, shards: int, device: str | None = None,
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
            claim_store.release(key, run.run_id)
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


def shard_job_options(samples: fo.core.collections.SampleCollection, label_field: str, run_id: str,
                      index: int | None = None) -> dict[str, Any]:
    """``DetectJob``'s arguments for shard ``index`` of the sharded run ``run_id``: prompts, model
    and options from the run's record, so every shard (and every rerun of one) does what the run
    recorded; the job belongs to that run (``part_of``) and beats its shard's heartbeat."""
    run = recorded_run(samples, label_field, run_id)
    options = {**run.options, **({"confidence_thresh": run.thresholds} if run.thresholds else {})}
    return dict(prompts=run.prompts, model=run.model, label_field=label_field, heatmaps=bool(run.heatmap_fields),
                candidates_field=run.candidates_field, part_of=run, part=index, **options)


def recorded_run(samples: fo.core.collections.SampleCollection, label_field: str, run_id: str) -> DetectRun:
    """The record of the sharded run ``run_id``; a shard of a replaced run has nothing to do."""
    run = DetectRun.load(samples, label_field)
    if run is None or run.run_id != run_id:
        found = f"run {run.run_id}" if run else "no run"
        raise LabelingError(f"this is a shard of run {run_id} on {label_field!r}, but the field's record is "
                            f"{found} (a newer run replaced it); nothing to do")
    return run


def shard_view(samples: fo.core.collections.SampleCollection, shard: dict) -> fo.DatasetView:
    """The samples of ``shard``: its id range within the run's target (ids are fixed-width hex,
    so string order is id order)."""
    sample_id = F("_id").to_string()
    return samples.match((sample_id >= shard["first_id"]) & (sample_id <= shard["last_id"]))


def run_status(samples: fo.core.collections.SampleCollection, label_field: str) -> RunStatus:
    """The state of the run recorded on ``label_field``: for a sharded run, each shard's (from its
    newest operation, so a rerun replaces a failed or killed one) and the samples it labelled. A
    run or shard that is running but whose heartbeat is older than ``claim_store.STALE_AFTER`` (or
    whose process is gone from this machine) is ``lost``: ``requeue`` runs lost shards again."""
    run = DetectRun.load(samples, label_field)
    if run is None:
        raise LabelingError(f"no detect run is recorded on {label_field!r}")
    holder = claim_store.read(claim_store.claim_key(dataset_name(samples), label_field))
    if not run.shards:
        ours = holder is not None and holder.run_id == run.run_id
        lost = run.state == "running" and (not ours or gone(samples, holder, run) is not None)
        return RunStatus(label_field, run.run_id, "lost" if lost else run.state, [])
    shards = shard_states(samples, run, holder)
    states = {s.state for s in shards}
    state = ("failed" if states & {"failed", "missing"} else "lost" if "lost" in states
             else "running" if "running" in states else "queued" if states & set(ACTIVE) else "done")
    return RunStatus(label_field, run.run_id, state, shards)


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
