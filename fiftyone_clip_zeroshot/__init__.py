"""Zero-shot object localization and detection with CLIP, for FiftyOne.

The core (``load_model``, ``localize``, ``propose`` on one image, and ``cache_info`` /
``clear_cache`` of the embedding store) does not import FiftyOne; ``detect``, ``propose`` over a
collection, ``index_objects`` and ``search`` (objects by text), ``run_status``, ``requeue``,
``zero_shot_model`` (for ``apply_model``) and the curation functions (``verify``, ``classify``,
``evaluate``, ``tag_for_review``, ``review_view``), the review of auto-labels (``accept``,
``reject``, ``relabel``, ``promote``, ``calibrate``, ``review_report``) and ``open_panel`` (the App
panel beside the grid) do, and are imported on first use.
"""

import sys
from typing import Any

from fiftyone_clip_zeroshot.core import (
    SMALL_OBJECTS,
    ClipModel,
    ClipZeroShotError,
    ImageLoadError,
    Localization,
    LocalizeOptions,
    ModelLoadError,
    OptionsError,
    cache_info,
    clear_cache,
    load_model,
    localize,
)
from fiftyone_clip_zeroshot.core import propose as _propose_image

_FIFTYONE_API = {
    "detect": "fiftyone_clip_zeroshot.labeling.runs.detect",
    "DetectJob": "fiftyone_clip_zeroshot.labeling.runs.detect",
    "run_status": "fiftyone_clip_zeroshot.labeling.runs.shards",
    "requeue": "fiftyone_clip_zeroshot.labeling.runs.shards",
    "LabelingError": "fiftyone_clip_zeroshot.labeling.runs.jobs",
    "DatabaseError": "fiftyone_clip_zeroshot.labeling.runs.jobs",
    "ClipZeroShotModel": "fiftyone_clip_zeroshot.labeling.fo_models.model",
    "zero_shot_model": "fiftyone_clip_zeroshot.labeling.fo_models.factory",
    "verify": "fiftyone_clip_zeroshot.labeling.curation.curate",
    "classify": "fiftyone_clip_zeroshot.labeling.curation.curate",
    "evaluate": "fiftyone_clip_zeroshot.labeling.curation.curate",
    "tag_for_review": "fiftyone_clip_zeroshot.labeling.curation.curate",
    "review_view": "fiftyone_clip_zeroshot.labeling.curation.curate",
    "EvaluationReport": "fiftyone_clip_zeroshot.labeling.curation.curate",
    "accept": "fiftyone_clip_zeroshot.labeling.curation.decisions",
    "reject": "fiftyone_clip_zeroshot.labeling.curation.decisions",
    "relabel": "fiftyone_clip_zeroshot.labeling.curation.decisions",
    "clear_decisions": "fiftyone_clip_zeroshot.labeling.curation.decisions",
    "review_queue": "fiftyone_clip_zeroshot.labeling.curation.decisions",
    "review_report": "fiftyone_clip_zeroshot.labeling.curation.decisions",
    "promote": "fiftyone_clip_zeroshot.labeling.curation.decisions",
    "calibrate": "fiftyone_clip_zeroshot.labeling.curation.calibrate",
    "Calibration": "fiftyone_clip_zeroshot.labeling.curation.calibrate",
    "open_panel": "fiftyone_clip_zeroshot.app.panel",
    "index_objects": "fiftyone_clip_zeroshot.labeling.object_search.index",
    "search": "fiftyone_clip_zeroshot.labeling.object_search.index",
    "IndexedObjects": "fiftyone_clip_zeroshot.labeling.object_search.index",
    "ClipEmbeddingsModel": "fiftyone_clip_zeroshot.labeling.fo_models.embeddings",
}

__all__ = [
    "SMALL_OBJECTS",
    "ClipModel",
    "ClipZeroShotError",
    "ImageLoadError",
    "Localization",
    "LocalizeOptions",
    "ModelLoadError",
    "OptionsError",
    "cache_info",
    "clear_cache",
    "load_model",
    "localize",
    "propose",
    *_FIFTYONE_API,
]


def propose(images: Any, **options: Any) -> Any:
    """The class-agnostic candidate boxes that every method reads, found before any prompt.

    For one image (a path, PIL image, numpy array or ``(3, H, W)`` tensor), returns them as
    ``(N, 4)`` float64 xyxy in image px (``core.localize.propose``). For a dataset or view, stores
    each image's as ``fo.Detections`` in ``label_field`` (default ``"candidates"``) and returns None
    (``labeling.object_search.candidates.propose_samples``: ``label_field``, ``skip_failures``, ``progress``).

    Args:
        images: one image, or a dataset or view of images.
        **options: ``LocalizeOptions`` fields; the proposal ones count (``proposal_tile``,
            ``proposal_side``, ``proposal_scales``; ``fz.SMALL_OBJECTS`` for crowds of small objects).
    """
    collections = sys.modules.get("fiftyone.core.collections")
    if collections is not None and isinstance(images, collections.SampleCollection):
        from fiftyone_clip_zeroshot.labeling.object_search.candidates import propose_samples

        return propose_samples(images, **options)
    return _propose_image(images, **options)


def __getattr__(name: str):
    if name in _FIFTYONE_API:
        import importlib

        return getattr(importlib.import_module(_FIFTYONE_API[name]), name)
    raise AttributeError(f"module 'fiftyone_clip_zeroshot' has no attribute {name!r}")
