"""Where each shard of a sharded run stands, read from its newest delegated operation and the
heartbeats its worker beats on the run's claim (``claim_store``)."""

from __future__ import annotations

from dataclasses import dataclass

import fiftyone as fo
from fiftyone.operators.delegated import DelegatedOperationService

from fiftyone_clip_zeroshot.labeling.runs import claim_store
from fiftyone_clip_zeroshot.labeling.runs.jobs import dataset_name
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun

DETECT_URI = "@clip-zeroshot/fiftyone-clip-zeroshot/detect"
ACTIVE = ("queued", "scheduled", "running")  # operation states that may still write labels


@dataclass
class ShardStatus:
    """One shard: its samples, its operation's state and how many samples it has labelled."""

    index: int
    samples: int
    state: str  # queued | scheduled | running | lost (no heartbeat) | completed | failed | missing (deleted)
    done: int
    operation_id: str | None
    error: str | None = None


def shard_states(samples: fo.core.collections.SampleCollection, run: DetectRun,
                 holder: claim_store.Claim | None) -> list[ShardStatus]:
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
        started = claim_store.utc(operation.started_at or operation.queued_at)
        if beat is None or beat["heartbeat"] < started:  # none yet from this operation's worker
            beat = dict(heartbeat=started, owner="its worker")
        error = claim_store.stale(beat["heartbeat"], beat["owner"])
        state = "lost" if error else state
    return ShardStatus(shard["index"], shard["samples"], state, done, str(operation.id), error)


