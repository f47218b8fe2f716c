"""Run the localizers over a FiftyOne collection and store detections, heatmaps and the run's parameters.

``DetectJob`` validates everything before any sample is touched; ``steps()`` (see ``SampleJob``)
yields progress, which is what both ``detect()`` and the App operator drive.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fiftyone as fo
import torch

from fiftyone_clip_zeroshot.core.localize import localize_tensor
from fiftyone_clip_zeroshot.core.model import DEFAULT_MODEL, ClipModel
from fiftyone_clip_zeroshot.core.options import LocalizeOptions, check_prompts
from fiftyone_clip_zeroshot.labeling.fo_private import declare_fields
from fiftyone_clip_zeroshot.labeling.jobs import (
    Progress,
    SampleJob,
    check_field_name,
    check_target,
    resolve_model,
    run_job,
)
from fiftyone_clip_zeroshot.labeling.labels import heatmap_fields, to_detections, to_heatmap
from fiftyone_clip_zeroshot.labeling.runs import DetectRun

HEATMAP_FOLDER = "clip-zeroshot-heatmaps"


def default_heatmap_root() -> Path:
    """Where PNG heatmaps go: ``<fo.config.default_dataset_dir>/clip-zeroshot-heatmaps``."""
    return Path(fo.config.default_dataset_dir) / HEATMAP_FOLDER


class DetectJob(SampleJob):
    """One detection run over ``samples``: validated at construction, executed by ``steps()``.

    ``fields`` lists the fields it writes; ``failures`` the samples that failed (see ``SampleJob``).
    """

    def __init__(
        self,
        samples: fo.core.collections.SampleCollection,
        prompts: str | Sequence[str],
        method: str = "sliding_window",
        model: str | ClipModel = DEFAULT_MODEL,
        label_field: str = "clip_detections",
        heatmaps: bool = True,
        device: str | None = None,
        skip_failures: bool = True,
        skip_existing: bool = False,
        heatmap_root: str | Path | None = None,
        **options: Any,
    ):
        self.prompts = check_prompts(prompts)
        self.options = LocalizeOptions.create(method=method, **options)
        self.label_field = check_field_name(label_field)
        self.heatmap_fields = heatmap_fields(label_field, self.prompts) if heatmaps else []
        self.skip_failures = skip_failures
        self.field_types = {label_field: fo.Detections, **{f: fo.Heatmap for f in self.heatmap_fields}}
        check_target(samples, self.field_types)
        self.samples = samples.exists(label_field, False) if skip_existing else samples
        self.model = resolve_model(model, device)
        self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        root = Path(heatmap_root) if heatmap_root else default_heatmap_root()
        dataset_name = getattr(samples, "dataset_name", None) or samples.name  # a view, or the dataset itself
        self.heatmap_dir = root / _safe(dataset_name) / label_field / self.run_id
        self.fields = [self.label_field, *self.heatmap_fields]
        super().__init__()

    def start(self) -> None:
        previous = DetectRun.load(self.samples, self.label_field)
        self._previous_field_dir = previous.field_dir if previous else None
        self._stale = [f for f in (previous.heatmap_fields if previous else []) if f not in self.heatmap_fields]
        self._old_pngs: list[Path] = []
        self._record_run()
        declare_fields(self.samples, self.field_types)

    def finish(self) -> None:
        for path in self._old_pngs:
            path.unlink(missing_ok=True)

    def labels(self, sample: fo.Sample, pixels: torch.Tensor) -> dict[str, fo.Label | None]:
        labels: dict[str, fo.Label | None] = self._localize(sample, pixels)
        self._old_pngs += _png_paths(sample, [*self.heatmap_fields, *self._stale], self._previous_field_dir)
        labels.update({field: None for field in self._stale if sample.has_field(field)})
        return labels

    def _localize(self, sample: fo.Sample, pixels: torch.Tensor) -> dict[str, fo.Label]:
        """All labels of one sample, or an error and no PNG left behind."""
        results = localize_tensor(pixels, self.prompts, self.model, self.options)
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        labels: dict[str, fo.Label] = {self.label_field: to_detections(results, (width, height), self.options.method)}
        pngs = {field: self.heatmap_dir / f"{sample.id}-{field}.png" for field in self.heatmap_fields}
        try:
            for (field, png), result in zip(pngs.items(), results):
                labels[field] = to_heatmap(result.heatmap, png, full_at=self.options.confidence_thresh or 1.0)
        except BaseException:
            for png in pngs.values():
                png.unlink(missing_ok=True)
            raise
        return labels

    def _record_run(self) -> None:
        """Record how the labels are made, with the values the run used (the model's batch size
        where the run left it unset)."""
        options = replace(self.options, batch_size=self.options.batch_size or self.model.batch_size)
        DetectRun(label_field=self.label_field, prompts=self.prompts, heatmap_fields=self.heatmap_fields,
                  model=self.model.name, device=str(self.model.device), options=asdict(options),
                  run_id=self.run_id, heatmap_dir=str(self.heatmap_dir)).save(self.samples)


def detect(
    samples: fo.core.collections.SampleCollection,
    prompts: str | Sequence[str],
    method: str = "sliding_window",
    model: str | ClipModel = DEFAULT_MODEL,
    label_field: str = "clip_detections",
    heatmaps: bool = True,
    confidence_thresh: float | None = None,
    batch_size: int | None = None,
    device: str | None = None,
    skip_failures: bool = True,
    skip_existing: bool = False,
    progress: Progress = True,
    **options: Any,
) -> list[str]:
    """Localize ``prompts`` in every image of ``samples``; returns the names of the fields written.

    Detections of all prompts go to ``label_field``; with ``heatmaps``, one ``fo.Heatmap`` per
    prompt goes to ``<label_field>_heatmap_<prompt>``. Rerunning on the same ``label_field``
    replaces those labels.

    Args:
        samples: a dataset or view of images (not a patches, frames or clips view).
        prompts: one prompt or a list, e.g. ``["a red circle", "a butterfly"]``.
        method: ``"sliding_window"``, ``"occlusion"``, ``"proposals"`` or ``"dense"`` (see ``localize``).
        model: a hub id, a local CLIP folder, a packaged name (``"shapes-world"``) or a ``ClipModel``.
        label_field: where the ``fo.Detections`` go; heatmap fields are named after it.
        heatmaps: also store one heatmap per prompt (inline when small, else a PNG next to the dataset).
        confidence_thresh: minimum box confidence (None: the method's measured default).
        batch_size: crops per forward pass for this run (None: the model's).
        device: ``"cuda"``, ``"cpu"`` or None (the GPU when there is one); ignored for a ``ClipModel``.
        skip_failures: leave samples whose image cannot be read without labels, and go on.
        skip_existing: skip samples that already have ``label_field``.
        progress: True, False or a callback ``(done, total)``.
        **options: other ``LocalizeOptions`` fields (window scales, strides, ...).
    """
    job = DetectJob(
        samples, prompts, method=method, model=model, label_field=label_field, heatmaps=heatmaps,
        device=device, skip_failures=skip_failures, skip_existing=skip_existing,
        confidence_thresh=confidence_thresh, batch_size=batch_size, **options,
    )
    run_job(job, progress)
    return job.fields


def _png_paths(sample: fo.Sample, fields: list[str], field_dir: Path | None) -> list[Path]:
    """PNG maps that ``sample`` references in ``fields`` and that an earlier run on this label
    field wrote (into a run folder under ``field_dir``); maps a user made are never touched."""
    paths = []
    for field in fields:
        label = sample[field] if sample.has_field(field) else None
        ours = isinstance(label, fo.Heatmap) and label.map_path and Path(label.map_path).parent.parent == field_dir
        if field_dir and ours:
            paths.append(Path(label.map_path))
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


__all__ = ["DetectJob", "detect", "default_heatmap_root"]
