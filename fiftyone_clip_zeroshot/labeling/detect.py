"""Run the localizers over a FiftyOne collection and store detections, heatmaps and the run's parameters.

``DetectJob`` validates everything before any sample is touched, then ``steps()`` processes one
sample at a time (decoding the next image in the background) and yields progress, which is what
both ``detect()`` and the App operators drive. Each sample's labels are written only once all
of its prompts succeeded, so a failure never leaves half a result.
"""

from __future__ import annotations

import logging
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import fiftyone as fo
import fiftyone.core.utils as fou
import torch

from fiftyone_clip_zeroshot.core.images import load_image
from fiftyone_clip_zeroshot.core.localize import localize_tensor
from fiftyone_clip_zeroshot.core.model import DEFAULT_MODEL, ClipModel, load_model
from fiftyone_clip_zeroshot.core.options import LocalizeOptions, check_method, check_prompts
from fiftyone_clip_zeroshot.labeling.labels import heatmap_fields, to_detections, to_heatmap

logger = logging.getLogger(__name__)

RUN_KEY_PREFIX = "clip_zeroshot_"
HEATMAP_FOLDER = "clip-zeroshot-heatmaps"
PREFETCH = 2
SAVE_EVERY = dict(batching_strategy="latency", batch_size=2.0)  # seconds: a killed run loses at most this much


class DetectError(ValueError):
    """The run cannot start (bad target, field clash); nothing was written."""


@lru_cache(maxsize=2)
def cached_model(name_or_path: str, device: str | None) -> ClipModel:
    """Load once per (model, device): the operators run many times in one App server process."""
    return load_model(name_or_path, device=device)


def run_key(label_field: str) -> str:
    return RUN_KEY_PREFIX + label_field


def default_heatmap_root() -> Path:
    """Where PNG heatmaps go: ``<fo.config.default_dataset_dir>/clip-zeroshot-heatmaps``."""
    return Path(fo.config.default_dataset_dir) / HEATMAP_FOLDER


class DetectJob:
    """One detection run over ``samples``: validated at construction, executed by ``steps()``.

    After the run, ``fields`` lists the fields written and ``failures`` maps sample ids to the
    error that stopped them (with ``skip_failures=True``; otherwise the first error is raised
    after the samples before it were saved).
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
        self.method = check_method(method)
        self.prompts = check_prompts(prompts)
        self.options = LocalizeOptions.create(self.method, **options)
        self.label_field = _check_field_name(label_field)
        self.heatmap_fields = heatmap_fields(label_field, self.prompts) if heatmaps else []
        self.skip_failures = skip_failures
        _check_target(samples, label_field, self.heatmap_fields)
        self.samples = samples.exists(label_field, False) if skip_existing else samples
        self.total = len(self.samples)
        self.model = model if isinstance(model, ClipModel) else cached_model(model, device)
        self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        root = Path(heatmap_root) if heatmap_root else default_heatmap_root()
        self.heatmap_dir = root / _safe(samples._dataset.name) / label_field / self.run_id
        self.failures: dict[str, str] = {}
        self.fields = [self.label_field, *self.heatmap_fields]

    def steps(self) -> Iterator[tuple[int, int]]:
        """Process the samples one by one, yielding ``(done, total)`` after each."""
        previous, previous_field_dir = _previous_run(self.samples, self.label_field)
        stale = [f for f in previous if f not in self.heatmap_fields]
        old_pngs: list[Path] = []
        self._record_run()
        _declare_fields(self.samples, {self.label_field: fo.Detections, **{f: fo.Heatmap for f in self.heatmap_fields}})
        paths = self.samples.values("filepath")
        done = 0
        with ThreadPoolExecutor(PREFETCH) as pool:
            images = _prefetch(pool, paths, self.model.device)
            for sample, image in zip(self.samples.iter_samples(autosave=True, **SAVE_EVERY), images):
                try:
                    labels = self._labels(sample, image.result())
                except Exception as error:  # noqa: BLE001 - reported per sample, see skip_failures
                    if not self.skip_failures or isinstance(error, KeyboardInterrupt):
                        raise
                    self.failures[sample.id] = f"{type(error).__name__}: {error}"
                    logger.warning("sample %s (%s) failed: %s", sample.id, sample.filepath, self.failures[sample.id])
                else:
                    old_pngs += _png_paths(sample, [*self.heatmap_fields, *stale], previous_field_dir)
                    for field, label in labels.items():
                        sample[field] = label
                    for field in stale:
                        if sample.has_field(field):
                            sample[field] = None
                done += 1
                yield done, self.total
        for path in old_pngs:
            path.unlink(missing_ok=True)
        if self.failures:
            logger.warning("%d of %d samples failed; see job.failures", len(self.failures), self.total)

    def _labels(self, sample: fo.Sample, pixels: torch.Tensor) -> dict[str, fo.Label]:
        """All labels of one sample, or an error and no PNG left behind."""
        results = localize_tensor(pixels, self.prompts, self.model, self.method, self.options)
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        labels: dict[str, fo.Label] = {self.label_field: to_detections(results, (width, height), self.method)}
        pngs = {field: self.heatmap_dir / f"{sample.id}-{field}.png" for field in self.heatmap_fields}
        try:
            for (field, png), result in zip(pngs.items(), results):
                labels[field] = to_heatmap(result.heatmap, png)
        except BaseException:
            for png in pngs.values():
                png.unlink(missing_ok=True)
            raise
        return labels

    def _record_run(self) -> None:
        """Record how the labels are made (``dataset.get_run_info(run_key).config``)."""
        config = self.samples.init_run(
            label_field=self.label_field,
            heatmap_fields=self.heatmap_fields,
            prompts=self.prompts,
            model=self.model.name,
            device=str(self.model.device),
            options={"method": self.method, **asdict(self.options)},
            run_id=self.run_id,
            heatmap_dir=str(self.heatmap_dir),
        )
        self.samples.register_run(run_key(self.label_field), config, overwrite=True, cleanup=False)


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
    progress: bool | Callable[[int, int], None] = True,
    **options: Any,
) -> list[str]:
    """Localize ``prompts`` in every image of ``samples``; returns the names of the fields written.

    Detections of all prompts go to ``label_field``; with ``heatmaps``, one ``fo.Heatmap`` per
    prompt goes to ``<label_field>_heatmap_<prompt>``. Rerunning on the same ``label_field``
    replaces those labels. ``options`` are ``LocalizeOptions`` fields (window scales, strides, ...).
    """
    job = DetectJob(
        samples, prompts, method=method, model=model, label_field=label_field, heatmaps=heatmaps,
        device=device, skip_failures=skip_failures, skip_existing=skip_existing,
        confidence_thresh=confidence_thresh, batch_size=batch_size, **options,
    )
    if callable(progress):
        for done, total in job.steps():
            progress(done, total)
    else:
        with fou.ProgressBar(total=job.total, progress=progress) as bar:
            for _ in job.steps():
                bar.update()
    if job.failures:
        print(f"{len(job.failures)} of {job.total} samples failed:")
        for sample_id, message in job.failures.items():
            print(f"  {sample_id}: {message}")
    return job.fields


def _prefetch(pool: ThreadPoolExecutor, paths: list[str], device: torch.device) -> Iterator[Future]:
    """Decode images ``PREFETCH`` ahead of the consumer, moving uint8 pixels to ``device``."""
    def load(path: str) -> torch.Tensor:
        pixels = load_image(path)
        if device.type == "cuda":
            return pixels.pin_memory().to(device, non_blocking=True)
        return pixels

    queue: deque[Future] = deque()
    for path in paths:
        queue.append(pool.submit(load, path))
        if len(queue) > PREFETCH:
            yield queue.popleft()
    yield from queue


def _check_field_name(name: str) -> str:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise DetectError(f"label_field must be a plain field name (letters, digits, _), got {name!r}")
    return name


def _check_target(samples: Any, label_field: str, heatmap_field_names: list[str]) -> None:
    """Refuse what cannot take our labels, before anything is written."""
    if not isinstance(samples, fo.core.collections.SampleCollection):
        raise DetectError(f"samples must be a FiftyOne dataset or view, got {type(samples).__name__}")
    if samples.media_type != "image":
        raise DetectError(
            f"only image collections are supported, this one has media type {samples.media_type!r}; "
            "for videos, convert frames to images first (e.g. dataset.to_frames(sample_frames=True))"
        )
    if samples._is_patches or samples._is_frames or samples._is_clips:
        raise DetectError("cannot write labels on a patches/frames/clips view; run on the source dataset or a view of it")
    schema = samples.get_field_schema()
    expected = {label_field: fo.Detections, **{f: fo.Heatmap for f in heatmap_field_names}}
    for field, label_type in expected.items():
        existing = schema.get(field)
        if existing is None:
            continue
        document_type = getattr(existing, "document_type", None)
        if document_type is not label_type:
            found = document_type.__name__ if document_type else type(existing).__name__
            raise DetectError(
                f"field {field!r} already holds {found}, not {label_type.__name__}; choose another label_field"
            )


def _declare_fields(samples: Any, fields: dict[str, type]) -> None:
    """Add the new label fields to the schema in one step (one at a time costs a schema reload
    per field, minutes for hundreds of prompts)."""
    schema = samples._dataset.get_field_schema()
    missing = {name: fo.EmbeddedDocumentField(kind) for name, kind in fields.items() if name not in schema}
    if missing:
        samples._dataset._merge_sample_field_schema(missing)


def _previous_run(samples: Any, label_field: str) -> tuple[list[str], Path | None]:
    """Heatmap fields and PNG folder of the last run on ``label_field`` (to replace them cleanly)."""
    key = run_key(label_field)
    if key not in samples._dataset.list_runs():
        return [], None
    config = samples._dataset.get_run_info(key).config
    run_dir = getattr(config, "heatmap_dir", None)
    return list(getattr(config, "heatmap_fields", None) or []), Path(run_dir).parent if run_dir else None


def _png_paths(sample: fo.Sample, fields: list[str], field_dir: Path | None) -> list[Path]:
    """PNG maps that ``sample`` references in ``fields`` and that an earlier run on this label
    field wrote (into a run folder under ``field_dir``); maps a user made are never touched."""
    paths = []
    for field in fields:
        label = sample[field] if sample.has_field(field) else None
        if field_dir and isinstance(label, fo.Heatmap) and label.map_path and Path(label.map_path).parent.parent == field_dir:
            paths.append(Path(label.map_path))
    return paths


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


__all__ = ["DetectError", "DetectJob", "detect", "default_heatmap_root", "run_key"]
