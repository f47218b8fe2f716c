"""One ``detect`` run split over N delegated operations (shards), one per worker, on FiftyOne's
own machinery: each shard is a queued detect operation over a disjoint range of sample ids,
which any ``fiftyone delegated launch`` sharing the database claims (atomically, once).

The run's record (``runs.DetectRun``) holds the shards and what every shard must do; a shard
reads it (``DetectJob.shard``), so reruns (``fiftyone delegated rerun``) do the same work.
Each shard's state is its operation's: ``run_status`` reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import fiftyone as fo
import numpy as np
from fiftyone import ViewField as F
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionContext

from fiftyone_clip_zeroshot.labeling.fo_private import declare_fields, serialized_view
from fiftyone_clip_zeroshot.labeling.jobs import LabelingError, dataset_name
from fiftyone_clip_zeroshot.labeling.runs import DetectRun

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.labeling.detect import DetectJob

DETECT_URI = "@clip-zeroshot/fiftyone-clip-zeroshot/detect"
ACTIVE = ("queued", "scheduled", "running")  # operation states that may still write labels


@dataclass
class ShardStatus:
    """One shard: its samples, its operation's state and how many samples it has labelled."""

    index: int
    samples: int
    state: str  # queued | scheduled | running | completed | failed | missing (operation deleted)
    done: int
    operation_id: str | None
    error: str | None = None


@dataclass
class RunStatus:
    """Where the run that writes ``label_field`` stands; ``shards`` is empty for an unsharded run."""

    label_field: str
    run_id: str
    state: str  # running | done | failed | stopped | queued
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
                 delegation_target: str | None = None) -> DetectRun:
    """Record ``job`` as a sharded run and queue ``shards`` detect operations over balanced,
    disjoint ranges of its sample ids; ``device`` is each worker's (None: its GPU if it has one)."""
    samples = job.samples
    if not isinstance(shards, int) or shards < 1:
        raise LabelingError(f"shards must be a positive integer, got {shards!r}")
    if not fo.load_dataset(dataset_name(samples)).persistent:
        raise LabelingError("shards run in other processes (delegated operations), which only see persistent "
                            "datasets: set dataset.persistent = True first")
    ids = sorted(samples.values("id"))
    ranges = [chunk for chunk in np.array_split(np.array(ids), min(shards, len(ids))) if len(chunk)]
    plan = [dict(index=i, samples=len(chunk), first_id=str(chunk[0]), last_id=str(chunk[-1]), operation_id=None)
            for i, chunk in enumerate(ranges)]
    run = job.record(state="sharded", shards=plan)
    run.save(samples)
    declare_fields(samples, job.field_types)
    service = DelegatedOperationService()
    queued = []
    try:
        for shard in plan:
            params = dict(label_field=job.label_field, shard_of=run.run_id, shard=shard["index"], device=device,
                          delegate=True)
            context = ExecutionContext(request_params=dict(
                dataset_name=dataset_name(samples), view=serialized_view(shard_view(samples, shard)), params=params,
                delegated=True))
            queued.append(service.queue_operation(
                operator=DETECT_URI, context=context, delegation_target=delegation_target,
                label=f"CLIP zero-shot: {job.label_field} shard {shard['index'] + 1}/{len(plan)}").id)
            shard["operation_id"] = str(queued[-1])
    except BaseException:
        for operation_id in queued:  # all shards or none
            service.delete_operation(operation_id)
        run.update(samples, state="failed")
        raise
    run.update(samples, shards=plan)
    return run


def shard_view(samples: fo.core.collections.SampleCollection, shard: dict) -> fo.DatasetView:
    """The samples of ``shard``: its id range within the run's target (ids are fixed-width hex,
    so string order is id order)."""
    sample_id = F("_id").to_string()
    return samples.match((sample_id >= shard["first_id"]) & (sample_id <= shard["last_id"]))


def run_status(samples: fo.core.collections.SampleCollection, label_field: str) -> RunStatus:
    """The state of the run recorded on ``label_field``: for a sharded run, each shard's (from its
    newest operation, so a rerun replaces a failed or killed one) and the samples it labelled."""
    run = DetectRun.load(samples, label_field)
    if run is None:
        raise LabelingError(f"no detect run is recorded on {label_field!r}")
    if not run.shards:
        state = "stopped" if run.state == "running" and not run.alive() else run.state
        return RunStatus(label_field, run.run_id, state, [])
    shards = shard_states(samples, run)
    states = {s.state for s in shards}
    state = ("failed" if states & {"failed", "missing"} else "running" if "running" in states
             else "queued" if states & set(ACTIVE) else "done")
    return RunStatus(label_field, run.run_id, state, shards)


def shard_states(samples: fo.core.collections.SampleCollection, run: DetectRun) -> list[ShardStatus]:
    """Each shard of ``run`` as its newest operation reports it."""
    newest = {}
    for operation in DelegatedOperationService().list_operations(operator=DETECT_URI,
                                                                 dataset_name=dataset_name(samples)):
        params = (operation.context.request_params or {}).get("params", {}) if operation.context else {}
        if params.get("shard_of") == run.run_id:
            index = params.get("shard")
            if index not in newest or operation.queued_at > newest[index].queued_at:
                newest[index] = operation
    return [_shard_status(shard, newest.get(shard["index"])) for shard in run.shards]


def _shard_status(shard: dict, operation) -> ShardStatus:
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
    return ShardStatus(shard["index"], shard["samples"], state, done, str(operation.id), error)


def refuse_if_running(run: DetectRun | None, samples: fo.core.collections.SampleCollection) -> None:
    """Refuse a new run on a label field that another run is still writing (naming that run)."""
    if run is None:
        return
    if run.shards:
        active = [s for s in shard_states(samples, run) if s.state in ACTIVE]
        if active:
            ids = ", ".join(s.operation_id for s in active)
            raise LabelingError(
                f"{run.label_field!r} is being written by sharded run {run.run_id}: {len(active)} of "
                f"{len(run.shards)} shards are still queued or running (operations {ids}). Wait for them "
                "(fz.run_status), choose another label_field, or mark a dead one `fiftyone delegated fail <id>`")
    elif run.alive():
        raise LabelingError(
            f"{run.label_field!r} is being written by run {run.run_id} ({run.owner}, last heartbeat "
            f"{run.heartbeat}); wait for it to end or choose another label_field")
