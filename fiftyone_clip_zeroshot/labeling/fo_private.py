"""The private FiftyOne calls this plugin makes, in one place: each has no public equivalent."""

from __future__ import annotations

from typing import Any

import fiftyone as fo
import fiftyone.core.stages as fos


def is_generated_view(samples: fo.core.collections.SampleCollection) -> bool:
    """Whether ``samples`` is a patches, frames or clips view, whose labels live in a generated
    dataset (public: only the view classes, which views derived from them do not always keep)."""
    return bool(samples._is_patches or samples._is_frames or samples._is_clips)


def declare_fields(samples: fo.core.collections.SampleCollection, fields: dict[str, type]) -> None:
    """Declare new embedded-label fields on the samples' dataset in one schema update; the public
    ``add_sample_field`` reloads the schema once per field (minutes for hundreds of prompts)."""
    dataset = samples._dataset
    schema = dataset.get_field_schema()
    missing = {name: fo.EmbeddedDocumentField(kind) for name, kind in fields.items() if name not in schema}
    if missing:
        dataset._merge_sample_field_schema(missing)


def serialized_view(view: fo.core.collections.SampleCollection) -> list[dict]:
    """The view's stages as an operation's context stores them (public: only ``ctx.view`` in an
    operator, which a queue without an App request has no way to build)."""
    return view._serialize()


def nearest_labels(index: Any, query: str, k: int) -> list[str]:
    """The ids of the ``k`` labels nearest to a text ``query`` in a patches similarity index, nearest
    first: what ``index.sort_by_similarity`` selects, before a view of samples forgets the order
    (and without generating a patches view of the whole index)."""
    _, label_ids = index._kneighbors(query=index._parse_query(query), k=k, aggregation="mean")
    return list(label_ids)


def check_similarity_backend(backend: str | None, **backend_kwargs: Any) -> None:
    """Refuse a similarity backend the brain does not know, or whose package is not installed,
    before any embedding work (public: only ``compute_similarity``, which finds out at the end)."""
    similarity_config(backend, **backend_kwargs).build().ensure_requirements()


def similarity_config(backend: str | None, **backend_kwargs: Any) -> Any:
    """The brain's similarity config for ``backend`` (None: its default) with these settings, as
    ``compute_similarity`` would build it: its ``method``, and a LanceDB ``uri`` and ``table_name``
    (public: only ``compute_similarity``, which builds and registers in one go)."""
    from fiftyone.brain.similarity import _parse_config

    return _parse_config(backend, **backend_kwargs)



# stages that pick or order samples out of the whole collection: they chose a run's targets once
_PICKING = (fos.Take, fos.Shuffle, fos.SortBy, fos.SortBySimilarity, fos.Limit, fos.Skip, fos.GeoNear, fos.GroupBy)


def select_targets(samples: fo.core.collections.SampleCollection, ids: list[str]) -> fo.core.view.DatasetView:
    """The samples of ``samples`` with these ``ids``, as fast as a lookup by id: the dataset's
    samples by id, then the view's other stages (its filters), so a sample that no longer passes
    them is left out. The stages that pick or order samples (take, sort_by, limit, skip, ...) are
    left out: they chose the ids, and re-running them scans the whole collection per call (229 ms
    for ``take(1000)`` of 100,000 samples, against 1 ms). Public: only ``samples.select(ids)``,
    which appends the selection after them."""
    if isinstance(samples, fo.Dataset) or is_generated_view(samples):
        return samples.select(ids)
    view = samples._root_dataset.select(ids)
    for stage in samples._stages:
        if not isinstance(stage, _PICKING):
            view = view.add_stage(stage)
    return view
