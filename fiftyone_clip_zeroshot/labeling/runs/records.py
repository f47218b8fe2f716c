"""The record a ``detect`` run keeps with its dataset (a FiftyOne run), and its one reader and writer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import fiftyone as fo

RUN_KEY_PREFIX = "clip_zeroshot_"


def run_key(label_field: str) -> str:
    """The FiftyOne run key under which the run that wrote ``label_field`` is recorded."""
    return RUN_KEY_PREFIX + label_field


@dataclass
class DetectRun:
    """What the last ``detect`` run on ``label_field`` did: its prompts and the heatmap field of
    each, the model and device, the resolved ``LocalizeOptions`` (as a dict) and where its PNG
    heatmaps went. Stored as ``dataset.get_run_info(run_key(label_field)).config``."""

    label_field: str
    prompts: list[str]
    heatmap_fields: list[str]
    model: str
    device: str
    options: dict[str, Any]
    run_id: str
    heatmap_dir: str | None = None
    state: str = "running"  # running | done | failed | stopped; a sharded run: "sharded" (see shards)
    owner: str | None = None  # "host pid" of the process running it (unsharded runs; heartbeats: claim_store)
    shards: list[dict[str, Any]] = field(default_factory=list)  # see labeling.runs.shards.queue_shards
    stale_fields: list[str] = field(default_factory=list)  # heatmap fields of the previous run to clear
    previous_field_dir: str | None = None  # where the previous run's PNG heatmaps are (to delete them)
    thresholds: dict[str, float] = field(default_factory=dict)  # per-prompt thresholds it ran with (else one)
    calibrated: dict[str, float] = field(default_factory=dict)  # per-prompt thresholds learnt from the review
    calibration: dict[str, Any] = field(default_factory=dict)  # how: target precision, decisions per prompt
    candidates_field: str | None = None  # where it stored each image's class-agnostic candidate boxes

    @property
    def method(self) -> str | None:
        return self.options.get("method")

    @property
    def heatmap_of(self) -> dict[str, str]:
        """Prompt → its heatmap field (empty when the run stored no heatmaps)."""
        return dict(zip(self.prompts, self.heatmap_fields))

    @property
    def field_dir(self) -> Path | None:
        """The folder holding this label field's run folders of PNG heatmaps."""
        return Path(self.heatmap_dir).parent if self.heatmap_dir else None

    def save(self, samples: fo.core.collections.SampleCollection) -> None:
        """Record this run on the samples' dataset, replacing the previous record of its field."""
        samples.register_run(run_key(self.label_field), self._config(samples), overwrite=True, cleanup=False)

    def update(self, samples: fo.core.collections.SampleCollection, **changes: Any) -> None:
        """Change fields of this (already saved) record in place, e.g. its state."""
        for name, value in changes.items():
            setattr(self, name, value)
        samples.update_run_config(run_key(self.label_field), self._config(samples))

    def _config(self, samples: fo.core.collections.SampleCollection) -> fo.core.runs.RunConfig:
        return samples.init_run(method=self.method, **asdict(self))

    @classmethod
    def load(cls, samples: fo.core.collections.SampleCollection, label_field: str) -> DetectRun | None:
        """The record of the run that wrote ``label_field``; None if no ``detect`` run did."""
        key = run_key(label_field)
        if not samples.has_run(key):
            return None
        config = samples.get_run_info(key).config
        values = {f.name: _plain(getattr(config, f.name, None)) for f in fields(cls)}
        lists = {name: values[name] or [] for name in ("prompts", "heatmap_fields", "stale_fields", "shards")}
        dicts = {name: values[name] or {} for name in ("options", "thresholds", "calibrated", "calibration")}
        return cls(**{**values, **lists, **dicts, "state": values["state"] or "done"})  # older records: no state


def _plain(value: Any) -> Any:
    """A stored value as plain lists and dicts (the database hands back its own list and dict types)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def plugin_fields(samples: fo.core.collections.SampleCollection) -> list[str]:
    """The ``fo.Detections`` fields a ``detect`` run wrote, newest run first."""
    schema = samples.get_field_schema(embedded_doc_type=fo.Detections)
    runs = set(samples.list_runs())
    ours = [name for name in schema if run_key(name) in runs]
    return sorted(ours, key=lambda name: samples.get_run_info(run_key(name)).timestamp, reverse=True)
