"""Run the localizers over a FiftyOne collection and store detections, heatmaps and the run's parameters.

``DetectJob`` validates everything before any sample is touched; ``steps()`` (see ``SampleJob``)
yields progress, which is what both ``detect()`` and the App operator drive.
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import fiftyone as fo
import torch

from fiftyone_clip_zeroshot.core.embedding_store import Counts, PixelsNeeded, open_store, pixels_digest, stand_in
from fiftyone_clip_zeroshot.core.localize import Localization, localize_batch
from fiftyone_clip_zeroshot.core.models.batching import default_image_batch
from fiftyone_clip_zeroshot.core.models.model import DEFAULT_MODEL, ClipModel
from fiftyone_clip_zeroshot.core.options import (
    LocalizeOptions,
    OptionsError,
    check_prompts,
)
from fiftyone_clip_zeroshot.core.stopwatch import stage
from fiftyone_clip_zeroshot.labeling.fo_private import declare_fields
from fiftyone_clip_zeroshot.labeling.runs import claim_store
from fiftyone_clip_zeroshot.labeling.runs.claims import check_free, claim_field
from fiftyone_clip_zeroshot.labeling.runs.jobs import (
    DatabaseError,
    Progress,
    SampleJob,
    check_field_name,
    check_target,
    dataset_name,
    dataset_of,
    resolve_model,
    run_job,
)
from fiftyone_clip_zeroshot.labeling.runs.labels import heatmap_fields, to_candidates, to_detections, to_heatmap
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun
from fiftyone_clip_zeroshot.labeling.runs.shards import queue_shards

HEATMAP_FOLDER = "clip-zeroshot-heatmaps"


def default_heatmap_root() -> Path:
    """Where PNG heatmaps go: ``<fo.config.default_dataset_dir>/clip-zeroshot-heatmaps``."""
    return Path(fo.config.default_dataset_dir) / HEATMAP_FOLDER


class DetectJob(SampleJob):
    """One detection run over ``samples``: validated at construction, executed by ``steps()``.

    ``fields`` lists the fields it writes; ``failures`` the samples that failed (see ``SampleJob``).
    A job ``part_of`` a recorded run (a shard, see ``shards.shard_job_options``) writes into that
    run's folder and record, and beats the heartbeat of its ``part``; otherwise it is a new run.
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
        part_of: DetectRun | None = None,
        part: int | None = None,
        image_batch_size: int | None = None,
        candidates_field: str | None = None,
        **options: Any,
    ):
        self.prompts = check_prompts(prompts)
        given = check_prompt_thresholds(options.get("confidence_thresh"), self.prompts)
        if given is not None:  # set after the model is known: prompts left out get its family's default
            options["confidence_thresh"] = None
        self.options = LocalizeOptions.create(method=method, **options)
        self.label_field = check_field_name(label_field)
        self.heatmap_fields = heatmap_fields(label_field, self.prompts) if heatmaps else []
        self.skip_failures = skip_failures
        self.candidates_field = check_field_name(candidates_field) if candidates_field else None
        if self.candidates_field == self.label_field:
            raise OptionsError(f"candidates_field must differ from label_field {label_field!r}")
        self.field_types = {label_field: fo.Detections, **{f: fo.Heatmap for f in self.heatmap_fields},
                            **({self.candidates_field: fo.Detections} if self.candidates_field else {})}
        check_target(samples, self.field_types, allow_empty=part_of is not None)
        self.part_of, self.part = part_of, part
        if part_of is None:
            previous = DetectRun.load(samples, label_field)
            check_free(samples, label_field)
            self.run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
            root = Path(heatmap_root) if heatmap_root else default_heatmap_root()
            self.heatmap_dir = root / _safe(dataset_name(samples)) / label_field / self.run_id
            earlier = [*previous.heatmap_fields, *previous.stale_fields] if previous else []  # a field a rerun
            self.stale_fields = [f for f in dict.fromkeys(earlier)  # of part of the samples left behind, too
                                 if f not in self.heatmap_fields and dataset_of(samples).has_sample_field(f)]
            self.previous_field_dir = previous.field_dir if previous else None
        else:  # a part of a recorded run: its folder and what it replaces
            self.run_id = part_of.run_id
            self.heatmap_dir = Path(part_of.heatmap_dir) if part_of.heatmap_dir else None
            self.stale_fields = part_of.stale_fields
            self.previous_field_dir = Path(part_of.previous_field_dir) if part_of.previous_field_dir else None
        self.samples = samples.exists(label_field, False) if skip_existing else samples
        self.model = resolve_model(model, device)
        self.options = self.options.for_model(self.model)
        self.thresholds: dict[str, float] = {}
        if given is not None:  # localize at the lowest, then keep each prompt's boxes at/above its own
            self.thresholds = {p: float(given.get(p, self.options.confidence_thresh)) for p in self.prompts}
            self.options = replace(self.options, confidence_thresh=min(self.thresholds.values()))
        self.image_batch_size = check_image_batch(image_batch_size, self.model)
        self.fields = [*self.field_types]
        self.read_fields = [*self.heatmap_fields, *self.stale_fields]  # their PNGs are replaced
        self._store = open_store(self.options.cache)
        self._run: DetectRun | None = None
        self._claim = claim_store.claim_key(dataset_name(samples), label_field)
        self.capped: Counter[str] = Counter()  # prompt -> samples where max_detections cut its boxes
        self.crops = Counts()  # the run's crops: read from the embedding store, and encoded
        super().__init__()

    def start(self) -> None:
        self._old_pngs: list[Path] = []  # maps that saved labels replaced: deleted at the end of the run
        self._replaced: dict[str, list[Path]] = {}  # sample id -> the maps its pending labels replace
        if self._store is not None:  # for the App's "embedded" count, which loads no model
            self._store.note(f"model:{self.model.name}", {"fingerprint": self.model.fingerprint})
        if self.part_of is None:
            self._run = self.record(owner=claim_store.this_process())
            self._run.save(self.samples)
        declare_fields(self.samples, self.field_types)

    def finish(self) -> None:
        """Delete the replaced PNGs, and the previous run's heatmap fields that no sample holds any more
        (a rerun with fewer prompts), so the App's sidebar lists only fields with maps; trim the
        embedding store if the run wrote to it."""
        for path in self._old_pngs:
            path.unlink(missing_ok=True)
        if self._store is not None:  # the cap holds after each run, however short
            self._store.trim_if_written()
        dataset = dataset_of(self.samples)
        for field in self.stale_fields:
            if dataset.has_sample_field(field) and dataset.count(field) == 0:
                dataset.delete_sample_field(field)

    def steps(self) -> Iterator[tuple[int, int]]:
        """``SampleJob.steps`` under the field's claim (taken first, or the run is refused naming
        the run that holds it; a shard beats its part of its run's claim), with heartbeats from a
        background thread, and the record's final state (done, or stopped by an error or interruption)."""
        if self.part_of is None:
            claim_field(self.samples, self.label_field, self.run_id)
        state = "stopped"
        try:
            self._beat()
            with claim_store.Heartbeat(self._beat):
                yield from super().steps()
            state = "done"
        except DatabaseError:
            self._run = None  # nothing more can be recorded
            raise
        finally:
            with contextlib.suppress(Exception):  # the database may be what stopped the run
                if self._run:
                    self._run.update(self.samples, state=state)
                if self.part_of is None:
                    claim_store.release(self._claim, self.run_id)

    def _beat(self) -> None:
        if self.part_of is None or self.part is not None:
            claim_store.beat(self._claim, self.run_id, self.part)

    def image_of(self, path: str) -> torch.Tensor:
        """A stand-in for an image the store has an entry of (``embedding_store.stand_in``: its file
        noted by an earlier run and unchanged since; nothing is decoded), else the decoded image."""
        note = self._store.file_note(path) if self._store is not None else None
        if note and "hw" in note and self._store.has(self.model.fingerprint, note["digest"]):
            return stand_in(note["digest"], tuple(note["hw"]))
        return super().image_of(path)

    def labels_batch(self, samples: list[fo.Sample], images: list[torch.Tensor]
                     ) -> list[dict[str, fo.Label | None] | Exception]:
        """The labels of several samples, their images localized together (``localize_batch``);
        a stand-in whose entry lacks a crop is decoded after all, and localized again."""
        images = list(images)
        results = localize_batch(images, self.prompts, self.model, self.options)
        decoded = []
        for index in (i for i, result in enumerate(results) if isinstance(result, PixelsNeeded)):
            try:
                images[index] = super().image_of(samples[index].filepath)
                decoded.append(index)
            except Exception as error:  # noqa: BLE001 - reported per sample, see skip_failures
                results[index] = error
        for index, result in zip(decoded, localize_batch([images[i] for i in decoded], self.prompts, self.model,
                                                         self.options) if decoded else []):
            results[index] = result
        outcomes: list[dict[str, fo.Label | None] | Exception] = []
        for sample, pixels, result in zip(samples, images, results):
            try:
                if isinstance(result, Exception):
                    raise result
                self.crops += result[0].crops
                outcomes.append(self._labels(sample, pixels, result))
            except Exception as error:  # noqa: BLE001 - reported per sample, see skip_failures
                outcomes.append(error)
        return outcomes

    def _labels(self, sample: fo.Sample, pixels: torch.Tensor, results: list[Localization]
                ) -> dict[str, fo.Label | None]:
        labels: dict[str, fo.Label | None] = self._stored(sample, pixels, results)
        if self._store is not None and not pixels.is_meta:  # a stand-in's note holds already
            self._store.note_file(sample.filepath, pixels_digest(pixels), tuple(pixels.shape[1:]))
        self.capped.update(result.prompt for result in results if result.over_cap)
        self._replaced[sample.id] = [path for path in _png_paths(sample, self.read_fields, self.previous_field_dir)
                                     if path.parent != self.heatmap_dir]  # a rerun shard rewrites its own maps
        labels.update({field: None for field in self.stale_fields if sample.has_field(field)})
        return labels

    def written(self, sample: fo.Sample, labels: dict[str, Any]) -> None:
        """The maps the sample's new labels replaced go at the end of the run."""
        self._old_pngs += self._replaced.pop(sample.id, [])

    def dropped(self, sample: fo.Sample, labels: dict[str, Any]) -> None:
        """A sample that left the target keeps its old maps; the new ones it never got go."""
        self._replaced.pop(sample.id, None)
        kept = {Path(path) for path in _png_paths(sample, self.heatmap_fields, self.heatmap_dir.parent)}
        for label in labels.values():
            if isinstance(label, fo.Heatmap) and label.map_path and Path(label.map_path).parent == self.heatmap_dir:
                if Path(label.map_path) not in kept:  # (a rerun shard rewrote its own map in place)
                    Path(label.map_path).unlink(missing_ok=True)

    def _stored(self, sample: fo.Sample, pixels: torch.Tensor, results: list[Localization]) -> dict[str, fo.Label]:
        """All labels of one sample from its localizations, or an error and no PNG left behind."""
        if self.thresholds:
            results = [replace(r, detections=r.detections[r.detections.confidence >= self.thresholds[r.prompt]])
                       for r in results]
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        labels: dict[str, fo.Label] = {self.label_field: to_detections(results, (width, height), self.options.method)}
        if self.candidates_field:
            labels[self.candidates_field] = to_candidates(results[0].candidates, (width, height))
        pngs = {field: self.heatmap_dir / f"{sample.id}-{field}.png" for field in self.heatmap_fields}
        try:
            with stage("heatmaps"):
                for (field, png), result in zip(pngs.items(), results):
                    full_at = self.thresholds.get(result.prompt, self.options.confidence_thresh) or 1.0
                    labels[field] = to_heatmap(result.heatmap, png, full_at=full_at)
        except BaseException:
            for png in pngs.values():
                png.unlink(missing_ok=True)
            raise
        return labels

    def cap_note(self) -> str:
        """What ``max_detections`` cut, as a sentence for the run's summary ("" when it cut nothing)."""
        if not self.capped:
            return ""
        cut = ", ".join(f"{prompt!r} on {n} sample{'s' * (n > 1)}" for prompt, n in self.capped.items())
        return (f"max_detections={self.options.max_detections} cut the boxes of {cut}; "
                "rerun with a higher max_detections to keep them all")

    def crops_note(self) -> str:
        """How many crops the run encoded and read from the embedding store, as a sentence."""
        note = f"{self.crops.computed:,} crops encoded, {self.crops.stored:,} read from the embedding store"
        return note + (" (cache=False)" if self.options.cache is False else "")

    def record(self, **fields: Any) -> DetectRun:
        """The record of this run: how the labels are made, with the values the run used (the
        model's batch size where the run left it unset); ``fields``: other ``DetectRun`` fields."""
        options = replace(self.options, batch_size=self.options.batch_size or self.model.batch_size)
        return DetectRun(
            label_field=self.label_field, prompts=self.prompts, heatmap_fields=self.heatmap_fields,
            model=self.model.name, device=str(self.model.device), options=asdict(options), run_id=self.run_id,
            heatmap_dir=str(self.heatmap_dir), stale_fields=self.stale_fields, thresholds=self.thresholds,
            previous_field_dir=str(self.previous_field_dir) if self.previous_field_dir else None,
            candidates_field=self.candidates_field, **fields)


def detect(
    samples: fo.core.collections.SampleCollection,
    prompts: str | Sequence[str],
    method: str = "sliding_window",
    model: str | ClipModel = DEFAULT_MODEL,
    label_field: str = "clip_detections",
    heatmaps: bool = True,
    confidence_thresh: float | dict[str, float] | None = None,
    batch_size: int | None = None,
    image_batch_size: int | None = None,
    device: str | None = None,
    skip_failures: bool = True,
    skip_existing: bool = False,
    progress: Progress = True,
    shards: int | None = None,
    candidates_field: str | None = None,
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
        confidence_thresh: minimum box confidence (None: the measured default of the model's family
            and the method), or one per prompt, e.g. ``fz.calibrate(...)``'s result (prompts it leaves
            out get that default).
        batch_size: crops per forward pass for this run (None: the model's).
        image_batch_size: images localized together, their crops encoded as one stream of
            batches (same results as one by one); None: 8 on a GPU, 1 on the CPU.
        device: ``"cuda"``, ``"cpu"`` or None (the GPU when there is one); ignored for a ``ClipModel``.
        skip_failures: leave samples whose image cannot be read without labels, and go on.
        skip_existing: skip samples that already have ``label_field``.
        progress: True, False or a callback ``(done, total)``.
        shards: instead of running here, queue this many delegated operations over disjoint parts
            of the samples, for ``fiftyone delegated launch`` workers (one per GPU) sharing this
            database to run; ``run_status`` follows them. Needs a persistent dataset.
        candidates_field: also store each image's class-agnostic candidate boxes (``fz.propose``'s,
            labelled ``candidate``) in this field, to see what the method could choose from.
        **options: other ``LocalizeOptions`` fields (window scales, strides, ...); ``cache``: the
            embedding store (True: the default folder, a folder, or False: encode every crop).
    """
    job = DetectJob(
        samples, prompts, method=method, model=model, label_field=label_field, heatmaps=heatmaps,
        device=device, skip_failures=skip_failures, skip_existing=skip_existing,
        confidence_thresh=confidence_thresh, batch_size=batch_size, image_batch_size=image_batch_size,
        candidates_field=candidates_field, **options,
    )
    if shards is not None:
        run = queue_shards(job, shards, device=device)
        if run is None:
            print(f"nothing to do: every sample already has {label_field!r} (skip_existing)")
            return job.fields
        print(f"queued {len(run.shards)} shards of run {run.run_id} over {job.total} samples; run "
              "`fiftyone delegated launch` on each worker, and follow them with fz.run_status(dataset, "
              f"{label_field!r})")
        return job.fields
    run_job(job, progress)
    for note in (job.crops_note() if progress is not False else "", job.cap_note()):
        if note:
            print(note)
    return job.fields


def check_image_batch(size: int | None, model: ClipModel) -> int:
    """``image_batch_size`` checked, or the default for the model's device."""
    if size is None:
        return default_image_batch(model.device)
    if not isinstance(size, int) or size < 1:
        raise OptionsError(f"image_batch_size must be a positive integer, got {size!r}")
    return size


def check_prompt_thresholds(thresh: Any, prompts: list[str]) -> dict[str, float] | None:
    """A per-prompt ``confidence_thresh`` (a dict) checked (the prompts it leaves out take the
    default); None for one threshold (a float or None)."""
    if not isinstance(thresh, dict):
        return None
    unknown = sorted(set(thresh) - set(prompts))
    if unknown:
        raise OptionsError(f"confidence_thresh names prompts that are not detected: {unknown}; prompts: {prompts}")
    for prompt, value in thresh.items():
        if not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise OptionsError(f"confidence_thresh of {prompt!r} must be in [0, 1], got {value!r}")
    return {prompt: float(value) for prompt, value in thresh.items()}


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
