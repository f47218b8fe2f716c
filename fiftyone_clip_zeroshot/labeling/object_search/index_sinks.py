"""Where ``index_objects`` puts its rows while it runs, chunk by chunk, so that its memory stays
flat however large the target: a brain index filled as it goes, or (LanceDB) a table on disk
that the brain's index opens once the rows are all there.

The brain's own ``add_to_index`` of a LanceDB index reads the whole table back and writes it
again on every call, so adding in chunks through it would grow with the index; appending to the
table, in the brain's columns, does not.
"""

from __future__ import annotations

import contextlib
from typing import Any

import fiftyone as fo
import fiftyone.brain as fob
import numpy as np

from fiftyone_clip_zeroshot.labeling.fo_private import similarity_config
from fiftyone_clip_zeroshot.labeling.runs.jobs import LabelingError, dataset_name, dataset_of


class IndexSink:
    """Rows of patches into a brain similarity index registered under ``brain_key`` (any backend):
    the run is registered with an empty index first, then filled by ``add``."""

    def __init__(self, samples: fo.core.collections.SampleCollection, brain_key: str, label_field: str,
                 backend: str | None, similarity: dict[str, Any]):
        self.samples, self.brain_key = samples, brain_key
        self.backend, self.similarity = backend, similarity  # compute_similarity's own keywords
        self.label_field = label_field
        self.index: Any = None

    def start(self) -> None:
        """Register the brain run with an empty index."""
        self.index = self._register()

    def add(self, rows: np.ndarray, sample_ids: list[str], label_ids: list[str]) -> None:
        """Add ``rows``, one per label, to the index (not reloaded until ``finish``)."""
        self.index.add_to_index(rows, np.asarray(sample_ids), label_ids=np.asarray(label_ids), reload=False)

    def finish(self) -> Any:
        """The complete index, saved with its run."""
        self.index.reload()
        self.index.save()
        return self.index

    def abort(self) -> None:
        """Delete what this run built: its brain run and the backend's index."""
        with contextlib.suppress(Exception):  # the database may be what stopped the run
            if self.brain_key in self.samples.list_brain_runs():
                dataset_of(self.samples).delete_brain_run(self.brain_key)

    def _register(self, **extra: Any) -> Any:
        return fob.compute_similarity(self.samples, patches_field=self.label_field, embeddings=False,
                                      brain_key=self.brain_key, backend=self.backend, progress=False,
                                      **{**self.similarity, **extra})


class LanceDBSink(IndexSink):
    """Rows appended to a LanceDB table of the brain's columns (``id``, ``sample_id``, ``vector``);
    the brain run is registered on that table by ``finish``. A table of that name must not exist:
    this run writes a table of its own, and deletes only that."""

    def __init__(self, samples: fo.core.collections.SampleCollection, brain_key: str, label_field: str,
                 backend: str | None, similarity: dict[str, Any]):
        import lancedb

        super().__init__(samples, brain_key, label_field, backend, similarity)
        config = similarity_config(backend, **{k: v for k, v in similarity.items() if k in ("uri", "table_name")})
        self.table_name = config.table_name or f"fiftyone-{_slug(dataset_name(samples))}-{brain_key}"
        self.db = lancedb.connect(config.uri)
        if self.table_name in _table_names(self.db):
            raise LabelingError(f"the LanceDB table {self.table_name!r} exists at {config.uri}; name another "
                                "(table_name=...) or delete it first: index_objects writes a table of its own")
        self.table: Any = None

    def start(self) -> None:
        """Nothing to register until the table holds every row."""

    def add(self, rows: np.ndarray, sample_ids: list[str], label_ids: list[str]) -> None:
        import pyarrow as pa

        vectors = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.float32()), rows.shape[1])
        chunk = pa.Table.from_arrays([pa.array(label_ids, pa.string()), pa.array(sample_ids, pa.string()),
                                      vectors], names=["id", "sample_id", "vector"])
        if self.table is None:
            self.table = self.db.create_table(self.table_name, chunk)
        else:
            self.table.add(chunk)

    def finish(self) -> Any:
        self.index = self._register(table_name=self.table_name)
        return self.index

    def abort(self) -> None:
        if self.table is not None:
            with contextlib.suppress(Exception):
                self.db.drop_table(self.table_name)
        super().abort()


def index_sink(samples: fo.core.collections.SampleCollection, brain_key: str, label_field: str,
               backend: str | None, similarity: dict[str, Any]) -> IndexSink:
    """The sink for ``backend`` (None: the brain's default backend)."""
    name = backend or similarity_config(None).method
    return (LanceDBSink if name == "lancedb" else IndexSink)(samples, brain_key, label_field, backend, similarity)


def _table_names(db: Any) -> set[str]:
    names: set[str] = set()
    token = None
    while True:
        page = list(db.table_names(page_token=token, limit=1000))
        names.update(page)
        if len(page) < 1000:
            return names
        token = page[-1]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name.lower())
