"""Find objects by text across a dataset: a FiftyOne Brain similarity index over candidate patches,
and a search that re-ranks the brain's nearest patches with our scorer.

``index_objects`` embeds each box as the localizers read a candidate (a square crop with
``INDEX_MARGIN`` of context), reading back what the embedding store already holds, and adds the
embeddings, a chunk at a time (``index_sinks``), to a brain similarity index of the zoo model
``clip-zeroshot-embeddings``, so the index (sklearn, LanceDB or a server) can embed prompts after
a restart and the App's text search works on the patches view. ``search`` asks that index for a
few times ``k`` nearest patches (cosine), then orders them by the model's probability for the
prompt against the negative prompts and any other prompts: cosine alone ranks a "red shape" near
"a red circle".
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fiftyone as fo
import fiftyone.zoo as foz
import numpy as np
import torch

from fiftyone_clip_zeroshot.core.embedding_store import Counts, open_store
from fiftyone_clip_zeroshot.core.models.model import DEFAULT_MODEL, ClipModel
from fiftyone_clip_zeroshot.core.models.prompt_templates import resolve_templates
from fiftyone_clip_zeroshot.core.options import LocalizeOptions, check_prompts
from fiftyone_clip_zeroshot.core.scoring import PromptScorer, context_crops, image_entry, stored_or_encoded
from fiftyone_clip_zeroshot.labeling.fo_models.embeddings import EMBEDDINGS_ZOO_NAME
from fiftyone_clip_zeroshot.labeling.fo_private import check_similarity_backend, nearest_labels
from fiftyone_clip_zeroshot.labeling.object_search.candidates import DEFAULT_CANDIDATES_FIELD
from fiftyone_clip_zeroshot.labeling.object_search.index_sinks import IndexSink, index_sink
from fiftyone_clip_zeroshot.labeling.runs.jobs import (
    LabelingError,
    Progress,
    SampleJob,
    check_field_name,
    check_target,
    resolve_model,
    run_job,
)
from fiftyone_clip_zeroshot.labeling.runs.labels import pixel_xyxy

logger = logging.getLogger(__name__)

INDEX_MARGIN = 0.1  # the context of an indexed box: the middle of the localizers' verify margins
FIRST_STAGE = 4  # search asks the index for this many times k patches, then re-ranks them
ADD_EVERY = 20_000  # index_objects adds rows to the index in chunks of about this many (40 MB at 512 floats)
DEFAULT_BRAIN_KEY = "clip_zeroshot_objects"


@dataclass
class IndexedObjects:
    """What ``index_objects`` built: the brain's index and where its embeddings came from."""

    brain_key: str
    index: Any  # fiftyone.brain.similarity.SimilarityIndex
    patches: int
    reused: int  # read back from the embedding store
    encoded: int

    def __str__(self) -> str:
        return (f"index {self.brain_key!r}: {self.patches} patches, {self.reused} embeddings reused from the "
                f"store, {self.encoded} encoded")


class IndexObjectsJob(SampleJob):
    """``index_objects`` as a job: each sample's boxes embedded as the localizers read a candidate
    (writing nothing to the samples) and added to the brain's index about ``ADD_EVERY`` rows at a
    time (``index_sinks``), so memory stays flat; a run that stops deletes what it built."""

    def __init__(self, samples: fo.core.collections.SampleCollection, label_field: str = DEFAULT_CANDIDATES_FIELD,
                 brain_key: str = DEFAULT_BRAIN_KEY, model: str | ClipModel = DEFAULT_MODEL,
                 backend: str | None = None, device: str | None = None, batch_size: int | None = None,
                 prompt_templates: str | Sequence[str] | None = None, cache: bool | str = True,
                 skip_failures: bool = True, **backend_kwargs: Any):
        self.label_field = check_field_name(label_field)
        check_target(samples, {})
        if getattr(samples.get_field_schema().get(label_field), "document_type", None) is not fo.Detections:
            raise LabelingError(f"no fo.Detections field {label_field!r} to index; run fz.propose(samples, "
                                f"label_field={label_field!r}) first, or name a detections field")
        check_brain_key(brain_key)
        if brain_key in samples.list_brain_runs():
            raise LabelingError(f"brain key {brain_key!r} exists; delete it (dataset.delete_brain_run("
                                f"{brain_key!r})) or choose another")
        check_zoo_model()
        try:
            check_similarity_backend(backend, **backend_kwargs)
        except ImportError as error:
            raise LabelingError(f"backend {backend!r} cannot run here ({error}): install its client package "
                                "(docs/search.md, Backends)") from None
        LocalizeOptions.create(cache=cache, prompt_templates=prompt_templates)  # refuse bad values before any work
        self.samples, self.brain_key, self.skip_failures = samples, brain_key, skip_failures
        self.model = resolve_model(model, device)
        self.model_kwargs: dict[str, Any] = {"clip_model": model if isinstance(model, str) else self.model.name}
        if prompt_templates is not None:
            self.model_kwargs["prompt_templates"] = prompt_templates
        self.backend, self.backend_kwargs = backend, backend_kwargs
        self.sink: IndexSink = index_sink(samples, brain_key, self.label_field, backend,
                                          {"model": EMBEDDINGS_ZOO_NAME, "model_kwargs": self.model_kwargs,
                                           **backend_kwargs})
        self.store = open_store(cache)
        self.batch_size = batch_size
        self.counts = Counts()
        self.patches = 0
        self._pending: list[tuple[np.ndarray, str, list[str]]] = []  # rows, sample id, label ids
        self._pending_rows = 0
        self.result: IndexedObjects | None = None
        super().__init__()

    def start(self) -> None:
        self.sink.start()

    def labels(self, sample: fo.Sample, pixels: torch.Tensor) -> dict[str, Any]:
        detections = sample[self.label_field].detections if sample[self.label_field] is not None else []
        xyxy = pixel_xyxy(detections, (int(pixels.shape[2]), int(pixels.shape[1])))
        count, make_batch, keys = context_crops(pixels, xyxy, (INDEX_MARGIN,), self.model.image_size)

        def encode(n: int, batch: Any) -> torch.Tensor:
            return self.model.encode_batches(n, batch, self.batch_size)

        if count:
            entry = image_entry(self.store, self.model, pixels)
            rows = stored_or_encoded(entry, self.counts, "pooled", keys, make_batch, encode, self.model.device)
            if entry is not None:
                entry.flush()
            self._pending.append((rows.float().cpu().numpy(), sample.id, [d.id for d in detections]))
            self._pending_rows += count
            if self._pending_rows >= ADD_EVERY:
                self._add_pending()
        return {}

    def _add_pending(self) -> None:
        """Hand the rows gathered so far to the index (appended to a LanceDB table on disk)."""
        if not self._pending:
            return
        rows = np.concatenate([r for r, _, _ in self._pending])
        sample_ids = [sample_id for r, sample_id, _ in self._pending for _ in range(len(r))]
        label_ids = [label_id for _, _, ids in self._pending for label_id in ids]
        self.sink.add(rows, sample_ids, label_ids)
        self.patches += len(rows)
        self._pending, self._pending_rows = [], 0

    def steps(self) -> Iterator[tuple[int, int]]:
        """``SampleJob.steps``; a run that stops (an error, an interruption) deletes its half-built index."""
        try:
            yield from super().steps()
        except BaseException:
            self.sink.abort()
            raise

    def finish(self) -> None:
        self._add_pending()
        self.result = IndexedObjects(self.brain_key, self.sink.finish(), self.patches, self.counts.stored,
                                     self.counts.computed)
        logger.info("%s", self.result)
        if self.store is not None:
            self.store.trim_if_written()


def index_objects(
    samples: fo.core.collections.SampleCollection,
    label_field: str = DEFAULT_CANDIDATES_FIELD,
    brain_key: str = DEFAULT_BRAIN_KEY,
    model: str | ClipModel = DEFAULT_MODEL,
    backend: str | None = None,
    device: str | None = None,
    batch_size: int | None = None,
    prompt_templates: str | Sequence[str] | None = None,
    cache: bool | str = True,
    progress: Progress = True,
    **backend_kwargs: Any,
) -> IndexedObjects:
    """Index the boxes of ``label_field`` (``fz.propose``'s candidates, or any detections) for text
    search: a FiftyOne Brain similarity index of their CLIP embeddings under ``brain_key``.

    Each box is embedded as the localizers read a candidate; rows the embedding store holds (from
    earlier ``detect`` runs) are read back, only the rest are encoded. The index names the zoo
    model ``clip-zeroshot-embeddings`` (register this repository's zoo source first), so
    ``sort_by_similarity("a red circle")`` and the App's search box keep working after a restart.
    Samples whose image cannot be read are left out of the index (and listed).

    Args:
        samples: a dataset or view of images.
        label_field: the ``fo.Detections`` field whose boxes are indexed.
        brain_key: the name of the brain run (``dataset.load_brain_results(brain_key)``).
        model: a hub id, a local CLIP folder or a packaged name (a ``ClipModel``: its ``name``).
        backend: the brain's similarity backend (None: its default, sklearn; ``"lancedb"``, ``"qdrant"``, ...).
        device: ``"cuda"``, ``"cpu"`` or None (the GPU when there is one).
        batch_size: crops per forward pass (None: the model's).
        prompt_templates: how the index embeds text queries (a set name or ``"{}"`` templates).
        cache: the embedding store (see ``LocalizeOptions.cache``).
        progress: True, False or a callback ``(done, total)``.
        **backend_kwargs: the backend's own settings (``uri``, ``table_name``, ``collection_name``, ...).
    """
    job = IndexObjectsJob(samples, label_field, brain_key, model, backend, device, batch_size, prompt_templates,
                          cache, **backend_kwargs)
    run_job(job, progress)
    return job.result


def brain_key_problem(brain_key: Any) -> str | None:
    """Why FiftyOne would refuse ``brain_key`` as a run's name (it must be a Python identifier), or None."""
    if isinstance(brain_key, str) and brain_key.isidentifier():
        return None
    return (f"brain_key must be a Python identifier (letters, digits and underscores, not starting with a "
            f"digit), such as {DEFAULT_BRAIN_KEY!r}; got {brain_key!r}")


def check_brain_key(brain_key: Any) -> str:
    """``brain_key``, or a ``LabelingError`` saying why FiftyOne would refuse it."""
    problem = brain_key_problem(brain_key)
    if problem:
        raise LabelingError(problem)
    return brain_key


def check_zoo_model() -> None:
    """Refuse to build an index whose text queries could not load their model after a restart."""
    if EMBEDDINGS_ZOO_NAME not in foz.list_zoo_models():
        raise LabelingError(
            f"the zoo model {EMBEDDINGS_ZOO_NAME!r} is not registered, so the index could not embed text "
            "queries after a restart: register this repository's zoo source first, "
            "foz.register_zoo_model_source(<repository URL or archive>) (docs/search.md)")


def search(
    samples: fo.core.collections.SampleCollection,
    prompt: str,
    k: int = 10,
    brain_key: str = DEFAULT_BRAIN_KEY,
    prompts: Sequence[str] = (),
    negative_prompts: Sequence[str] | None = None,
    confidence_thresh: float | None = None,
    first_stage: int | None = None,
) -> fo.core.view.DatasetView:
    """The ``k`` patches that best show ``prompt``, best first, as a patches view.

    Two stages: the brain's index returns its ``first_stage`` nearest patches by cosine (default
    ``FIRST_STAGE * k``), then the model's probability for ``prompt`` re-ranks them: a softmax
    against ``negative_prompts`` and the other ``prompts`` for CLIP, the prompt's own sigmoid for SigLIP.

    Args:
        samples: the dataset or view that ``index_objects`` indexed, or a view of it (the
            nearest patches are then found among the view's, so ``k`` come back when it has them).
        prompt: what to find, e.g. ``"a red circle"``.
        k: how many patches to return.
        brain_key: the index built by ``index_objects``.
        prompts: other things that may be in the patches; a patch that shows one better ranks lower.
        negative_prompts: generic texts (None: the localizers' defaults).
        confidence_thresh: drop patches below this probability (None: keep ``k``).
        first_stage: how many nearest patches to re-rank (None: ``FIRST_STAGE * k``).
    """
    if k < 1:
        raise LabelingError(f"k must be at least 1, got {k}")
    if brain_key not in samples.list_brain_runs():
        raise LabelingError(f"no brain run {brain_key!r}; build it with fz.index_objects(samples, brain_key=...)")
    config = samples.get_brain_info(brain_key).config
    if not _is_object_index(config):
        raise LabelingError(f"brain run {brain_key!r} is not an index of patches by fz.index_objects")
    prompt = check_prompts([prompt])[0]
    others = [p for p in check_prompts(list(prompts)) if p != prompt] if prompts else []
    kwargs = dict(config.model_kwargs or {})
    clip = resolve_model(kwargs.get("clip_model", DEFAULT_MODEL), None)
    negatives = LocalizeOptions.create(**({} if negative_prompts is None else
                                          {"negative_prompts": tuple(negative_prompts)})).negative_prompts
    index = samples.load_brain_results(brain_key)
    ids = _nearest_in(samples, index, prompt, first_stage or FIRST_STAGE * k)
    if len(ids):
        embeddings, _, label_ids = index.get_embeddings(label_ids=ids)
        rows = dict(zip(label_ids, embeddings))
        scorer = PromptScorer(clip, [prompt, *others], negatives,
                              templates=resolve_templates(kwargs.get("prompt_templates")))
        probs = scorer(torch.as_tensor(np.stack([rows[i] for i in ids]), dtype=torch.float32,
                                       device=clip.device))[:, 0].cpu().numpy()
        order = np.argsort(-probs, kind="stable")[:k]
        if confidence_thresh is not None:
            order = order[probs[order] >= confidence_thresh]
        ids = ids[order]
    best = ids.tolist()
    field = config.patches_field
    return samples.select_labels(ids=best, fields=field).to_patches(field).select(best, ordered=True)


def object_indexes(samples: fo.core.collections.SampleCollection) -> list[str]:
    """The brain keys of the indexes ``index_objects`` built on ``samples``' dataset (those ``search`` reads)."""
    return [key for key in samples.list_brain_runs(type="similarity")
            if _is_object_index(samples.get_brain_info(key).config)]


def _is_object_index(config: Any) -> bool:
    return bool(getattr(config, "patches_field", None)) and getattr(config, "model", None) == EMBEDDINGS_ZOO_NAME


def _nearest_in(samples: fo.core.collections.SampleCollection, index: Any, prompt: str, count: int) -> np.ndarray:
    """The ids of the ``count`` patches of ``samples`` nearest to ``prompt``: for a view, the index
    is restricted to it while it is asked (the index is the dataset's cached one, so it is restored)."""
    if isinstance(samples, fo.Dataset):
        return np.array(nearest_labels(index, prompt, count))
    with index.use_view(samples):
        return np.array(nearest_labels(index, prompt, count))
