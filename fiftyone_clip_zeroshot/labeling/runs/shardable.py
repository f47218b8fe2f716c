"""What a run must offer to be split into shards (``shards.queue_shards``): a protocol of its own,
so that the shards need not import the run that queues them."""

from __future__ import annotations

from typing import Any, Protocol

import fiftyone as fo

from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun


class ShardableRun(Protocol):
    """A run over ``samples`` into ``label_field`` (``DetectJob``), recorded by ``record``."""

    samples: fo.core.collections.SampleCollection
    label_field: str
    run_id: str
    field_types: dict[str, type]

    def record(self, **fields: Any) -> DetectRun:
        """The run's record, with ``fields`` set."""
