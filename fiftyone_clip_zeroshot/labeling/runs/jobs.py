"""What every labelling run shares: validation of the target, a per-sample loop with background
decoding, saving and failure handling, and the progress/summary plumbing of ``detect``, ``verify``
and ``classify``.

A job is validated when it is constructed (nothing is written before), then ``steps()`` works
``image_batch_size`` samples at a time and yields ``(done, total)`` after each. A sample's fields
are assigned only once all of them are computed, and FiftyOne saves each sample in one update,
so a failure or interruption never leaves half a result.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from typing import Any

import fiftyone as fo
import fiftyone.core.utils as fou
import torch
from pymongo.errors import PyMongoError

from fiftyone_clip_zeroshot.core.errors import ClipZeroShotError
from fiftyone_clip_zeroshot.core.geometry.images import load_image
from fiftyone_clip_zeroshot.core.models.model import ClipModel, load_model
from fiftyone_clip_zeroshot.core.stopwatch import stage
from fiftyone_clip_zeroshot.labeling.fo_private import is_generated_view, select_targets

logger = logging.getLogger(__name__)

PREFETCH = 2
FETCH = 64  # samples read from the database in one query (their images are labelled image_batch_size at a time)
SAVE_EVERY_S = 2.0  # finished labels are written at least this often: a killed run loses at most this much

Progress = bool | Callable[[int, int], None]


class LabelingError(ClipZeroShotError, ValueError):
    """The run cannot start (bad target, field clash); nothing was written."""


class DatabaseError(ClipZeroShotError, RuntimeError):
    """The database went away mid-run; the samples saved before are kept."""


@lru_cache(maxsize=2)
def cached_model(name_or_path: str, device: str | None) -> ClipModel:
    """Load once per (model, device): the operators run many times in one App server process."""
    return load_model(name_or_path, device=device)


def resolve_model(model: str | ClipModel, device: str | None) -> ClipModel:
    return model if isinstance(model, ClipModel) else cached_model(model, device)


class SampleJob:
    """Base of the labelling runs: subclasses validate in ``__init__`` and implement ``labels``.

    ``failures`` maps sample ids to the error that stopped them (with ``skip_failures``;
    otherwise the first error is raised after the samples before it were saved).
    """

    samples: fo.core.collections.SampleCollection
    model: ClipModel
    skip_failures: bool = True
    image_batch_size: int = 1
    read_fields: list[str] | None = None  # the fields ``labels`` reads besides id and filepath (None: all)

    def __init__(self) -> None:
        self.failures: dict[str, str] = {}
        self.passed_over = 0  # samples that left the target (or changed their file) before their turn
        ids, paths = self.samples.values(["id", "filepath"])
        self._targets: list[tuple[str, str]] = list(zip(ids, paths))  # what the run labels, bound by id
        self.total = len(self._targets)

    @property
    def device(self) -> torch.device:
        """Where decoded images go: the model's device."""
        return self.model.device

    def labels(self, sample: fo.Sample, pixels: torch.Tensor) -> dict[str, Any]:
        """The field values to set on ``sample`` (raise to leave the sample untouched)."""
        raise NotImplementedError

    def labels_batch(self, samples: list[fo.Sample], images: list[torch.Tensor]) -> list[dict[str, Any] | Exception]:
        """``labels`` of several samples at once, an exception in the place of one that failed
        (by default one by one; ``image_batch_size`` samples come at a time)."""
        outcomes: list[dict[str, Any] | Exception] = []
        for sample, pixels in zip(samples, images):
            try:
                outcomes.append(self.labels(sample, pixels))
            except Exception as error:  # noqa: BLE001 - reported per sample, see skip_failures
                outcomes.append(error)
        return outcomes

    def start(self) -> None:
        """Called once before the first sample."""

    def finish(self) -> None:
        """Called once after the last sample."""

    def written(self, sample: fo.Sample, labels: dict[str, Any]) -> None:
        """Called once ``labels`` are saved on ``sample``."""

    def dropped(self, sample: fo.Sample, labels: dict[str, Any]) -> None:
        """Called instead of ``written`` when ``sample`` left the target before its labels were saved."""

    def image_of(self, path: str) -> torch.Tensor:
        """The image at ``path`` as ``labels`` takes it: decoded, on ``device`` (called ahead, in threads)."""
        with stage("decode"):
            pixels = load_image(path)
        if self.device.type == "cuda":
            return pixels.pin_memory().to(self.device, non_blocking=True)
        return pixels

    def steps(self) -> Iterator[tuple[int, int]]:
        """Process the samples ``image_batch_size`` at a time, yielding ``(done, total)`` after each sample.

        Samples are bound to their images by id: the ids and paths are read once; the samples are
        read ``FETCH`` at a time by id, just before they are labelled (no cursor stays open while
        the model works; by id, with the view's filters but not its take/sort/limit stages, which
        chose the ids: ``select_targets``), with only the ``read_fields``; their labels are written
        together (``LabelWriter``), and a sample that left the target meanwhile (deleted, labelled
        by another run, or given another file) is passed over (``passed_over``). So no label can
        land on another sample, whatever the view's filter.
        """
        self.start()
        done = 0
        writer = LabelWriter(self)
        try:
            with ThreadPoolExecutor(PREFETCH) as pool:
                images = prefetch_images(pool, [path for _, path in self._targets], self.image_of,
                                         ahead=max(PREFETCH, self.image_batch_size))
                reading = self.samples if self.read_fields is None else self.samples.select_fields(self.read_fields)
                for block in _blocks(self._targets, max(FETCH, self.image_batch_size)):
                    with stage("select"):
                        fetched = {sample.id: sample for sample in select_targets(reading, [i for i, _ in block])}
                    for chunk in _blocks(block, self.image_batch_size):
                        loaded = [(target, next(images)) for target in chunk]
                        present = [(fetched[i], image) for (i, path), image in loaded
                                   if i in fetched and fetched[i].filepath == path]
                        self.passed_over += len(chunk) - len(present)
                        for sample, outcome in zip((s for s, _ in present), self._chunk_labels(present)):
                            if isinstance(outcome, Exception):
                                self._failed(sample, outcome)
                            else:
                                writer.add(sample, outcome)
                        writer.write_if_due()
                        for _ in chunk:
                            done += 1
                            yield done, self.total
                writer.write()
        except PyMongoError as error:
            raise DatabaseError(
                f"lost the database after {done} of {self.total} samples ({type(error).__name__}: {error}); the "
                "samples saved before are kept: once it is back, rerun with skip_existing=True") from error
        except BaseException:  # a failure (skip_failures=False) or an interruption: keep what finished before it
            with contextlib.suppress(PyMongoError):
                writer.write()
            raise
        self.finish()
        if self.failures:
            logger.warning("%d of %d samples failed; see job.failures", len(self.failures), self.total)
        if self.passed_over:
            logger.warning("%d of %d samples left the target during the run and were passed over",
                           self.passed_over, self.total)

    def _chunk_labels(self, chunk: list[tuple[fo.Sample, Future]]) -> list[dict[str, Any] | Exception]:
        """The outcome of each sample of ``chunk``: its labels, or why its image or labels failed."""
        outcomes: list[dict[str, Any] | Exception | None] = [None] * len(chunk)
        decoded = []
        for index, (_, image) in enumerate(chunk):
            try:
                decoded.append((index, image.result()))
            except Exception as error:  # noqa: BLE001 - reported per sample, see skip_failures
                outcomes[index] = error
        if decoded:
            labelled = self.labels_batch([chunk[i][0] for i, _ in decoded], [pixels for _, pixels in decoded])
            for (index, _), outcome in zip(decoded, labelled):
                outcomes[index] = outcome
        return outcomes

    def _failed(self, sample: fo.Sample, error: Exception) -> None:
        if not self.skip_failures:
            raise error
        self.failures[sample.id] = f"{type(error).__name__}: {error}"
        logger.warning("sample %s (%s) failed: %s", sample.id, sample.filepath, self.failures[sample.id])


def run_job(job: SampleJob, progress: Progress) -> None:
    """Drive ``job`` with a progress bar (or a ``progress(done, total)`` callback), then print failures."""
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


class LabelWriter:
    """The labels of finished samples, written in one bulk update at least every ``SAVE_EVERY_S``
    seconds. Just before, one query finds which of them are still in the target with the same
    file; the others are passed over. Each sample's fields are set in one update, so a failure
    never leaves half a result."""

    def __init__(self, job: SampleJob):
        self.job = job
        self.pending: list[tuple[fo.Sample, dict[str, Any]]] = []
        self.since = time.monotonic()

    def add(self, sample: fo.Sample, labels: dict[str, Any]) -> None:
        self.pending.append((sample, labels))

    def write_if_due(self) -> None:
        if time.monotonic() - self.since >= SAVE_EVERY_S:
            self.write()

    def write(self) -> None:
        pending, self.pending, self.since = self.pending, [], time.monotonic()
        if not pending:
            return
        with stage("select"):
            still = dict(zip(*select_targets(self.job.samples, [s.id for s, _ in pending]).values(["id", "filepath"])))
        kept = []
        with stage("db write"), self.job.samples.save_context(batching_strategy="static",
                                                              batch_size=len(pending)) as saver:
            for sample, labels in pending:
                if still.get(sample.id) != sample.filepath:
                    self.job.passed_over += 1
                    self.job.dropped(sample, labels)
                    continue
                for field, value in labels.items():
                    sample[field] = value
                saver.save(sample)
                kept.append((sample, labels))
        for sample, labels in kept:
            self.job.written(sample, labels)


def _blocks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def prefetch_images(pool: ThreadPoolExecutor, paths: list[str], load: Callable[[str], torch.Tensor],
                    ahead: int = PREFETCH) -> Iterator[Future]:
    """``load`` the images at ``paths`` ``ahead`` of the consumer, in ``pool``'s threads."""
    queue: deque[Future] = deque()
    for path in paths:
        queue.append(pool.submit(load, path))
        if len(queue) > ahead:
            yield queue.popleft()
    yield from queue


def exact_count(samples: fo.core.collections.SampleCollection) -> int:
    """The number of samples, counted: a whole dataset's ``len`` is MongoDB's estimate, which an
    unclean database shutdown can leave wrong (even 0) until the collection is validated."""
    return samples.count("id")


def dataset_name(samples: fo.core.collections.SampleCollection) -> str:
    """The name of the dataset behind ``samples`` (a view, or the dataset itself)."""
    return getattr(samples, "dataset_name", None) or samples.name


def dataset_of(samples: fo.core.collections.SampleCollection) -> fo.Dataset:
    """The dataset behind ``samples``, by the public API (``fo_private`` keeps only calls without one)."""
    return fo.load_dataset(dataset_name(samples))


def check_field_name(name: str, what: str = "label_field") -> str:
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise LabelingError(f"{what} must be a plain field name (letters, digits, _), got {name!r}")
    return name


def check_target(samples: Any, fields: dict[str, type], allow_empty: bool = False) -> None:
    """Refuse what cannot take our labels (``fields``: name → label type), before anything is written;
    and an empty target unless ``allow_empty`` (a shard whose samples were deleted has nothing to do)."""
    if not isinstance(samples, fo.core.collections.SampleCollection):
        raise LabelingError(f"samples must be a FiftyOne dataset or view, got {type(samples).__name__}")
    if samples.media_type != "image":
        raise LabelingError(
            f"only image collections are supported, this one has media type {samples.media_type!r}; "
            "for videos, convert frames to images first (e.g. dataset.to_frames(sample_frames=True)), or localize "
            "a video file's frames in Python with localize_video (docs/videos.md)"
        )
    if is_generated_view(samples):
        raise LabelingError(
            "cannot write labels on a patches/frames/clips view; run on the source dataset or a view of it"
        )
    if not allow_empty and exact_count(samples) == 0:
        raise LabelingError("the target has no samples (an empty view, or no samples selected); nothing to label")
    schema = samples.get_field_schema()
    for field, label_type in fields.items():
        existing = schema.get(field)
        if existing is None:
            continue
        document_type = getattr(existing, "document_type", None)
        if document_type is not label_type:
            found = document_type.__name__ if document_type else type(existing).__name__
            raise LabelingError(
                f"field {field!r} already holds {found}, not {label_type.__name__}; choose another field"
            )
