"""One writer per label field, the policy every run follows: a run takes its field's claim
(``claim_store``) before it writes, or is refused naming the run that holds it; a holder that
is gone (no heartbeat for ``STALE_AFTER`` s, its process gone, or, for a sharded run, all its
shards ended) is taken over.
"""

from __future__ import annotations

import logging

import fiftyone as fo

from fiftyone_clip_zeroshot.labeling.runs import claim_store
from fiftyone_clip_zeroshot.labeling.runs.jobs import LabelingError, dataset_name
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun
from fiftyone_clip_zeroshot.labeling.runs.shard_states import ACTIVE, shard_states

logger = logging.getLogger(__name__)


def check_free(samples: fo.core.collections.SampleCollection, label_field: str) -> None:
    """Refuse at once a run on a label field that another run still writes (naming that run); the
    claim itself is taken when the run starts (``claim_field``)."""
    holder = claim_store.read(claim_store.claim_key(dataset_name(samples), label_field))
    if holder is not None and gone(samples, holder) is None:
        raise LabelingError(_busy(samples, holder, label_field))


def claim_field(samples: fo.core.collections.SampleCollection, label_field: str, run_id: str,
                sharded: bool = False) -> str:
    """Take the one claim on ``label_field`` for ``run_id`` (atomically), or raise
    ``LabelingError`` naming the run that holds it; a holder that is gone (no heartbeat for
    ``STALE_AFTER`` s, its process gone, or all its shards ended) is taken over. Returns the key."""
    key = claim_store.claim_key(dataset_name(samples), label_field)
    owner = claim_store.SHARDED if sharded else claim_store.this_process()
    holder = claim_store.insert(key, run_id, owner)
    while holder is not None:
        reason = gone(samples, holder)
        if reason is None:
            raise LabelingError(_busy(samples, holder, label_field))
        if claim_store.take_over(holder, run_id, owner):
            if not reason.startswith("its shards ended"):
                logger.warning("%r: took over the claim of run %s (%s)", label_field, holder.run_id, reason)
            return key
        holder = claim_store.insert(key, run_id, owner)  # someone else moved first: look again
    return key


def gone(samples: fo.core.collections.SampleCollection, holder: claim_store.Claim | None,
         run: DetectRun | None = None) -> str | None:
    """Why the run holding ``holder`` no longer writes its field (None while it does)."""
    if holder is None:
        return "it holds no claim"
    if holder.owner != claim_store.SHARDED:
        return claim_store.stale(holder.heartbeat, holder.owner)
    label_field = holder.key.rpartition("/")[2]
    run = run or DetectRun.load(samples, label_field)
    if run is None or run.run_id != holder.run_id:
        return "its record was replaced"
    if any(s.state in ACTIVE for s in shard_states(samples, run, holder)):
        return None
    return "its shards ended (done, failed or lost)"


def _busy(samples: fo.core.collections.SampleCollection, holder: claim_store.Claim, label_field: str) -> str:
    limit = f"{claim_store.STALE_AFTER:.0f} s"
    if holder.owner != claim_store.SHARDED:
        return (f"{label_field!r} is being written by run {holder.run_id} ({holder.owner}, last heartbeat "
                f"{holder.heartbeat.isoformat(timespec='seconds')}); wait for it to end or choose another "
                f"label_field (a run whose process is gone, or without a heartbeat for {limit}, is taken over)")
    run = DetectRun.load(samples, label_field)
    active = [s for s in shard_states(samples, run, holder) if s.state in ACTIVE]
    ids = ", ".join(s.operation_id for s in active)
    return (f"{label_field!r} is being written by sharded run {holder.run_id}: {len(active)} of {len(run.shards)} "
            f"shards are still queued or running (operations {ids}). Wait for them (fz.run_status), choose another "
            f"label_field, or, for shards whose worker died (lost after {limit} without a heartbeat), fz.requeue")
