"""The private FiftyOne calls this plugin makes, in one place: each has no public equivalent."""

from __future__ import annotations

import fiftyone as fo


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
