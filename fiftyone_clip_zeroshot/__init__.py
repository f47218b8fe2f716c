"""Zero-shot object localization and detection with CLIP, for FiftyOne.

The core (``load_model``, ``localize``, ``propose``, and ``cache_info`` / ``clear_cache`` of the
embedding store) does not import FiftyOne; ``detect``,
``run_status``, ``requeue``, ``zero_shot_model`` (for ``apply_model``) and the curation functions
(``verify``, ``classify``, ``evaluate``, ``tag_for_review``, ``review_view``), the review of
auto-labels (``accept``, ``reject``, ``relabel``, ``promote``, ``calibrate``, ``review_report``)
and ``open_panel`` (the App panel beside the grid) do, and are imported on first use.
"""

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
    propose,
)

_FIFTYONE_API = {
    "detect": "fiftyone_clip_zeroshot.labeling.detect",
    "DetectJob": "fiftyone_clip_zeroshot.labeling.detect",
    "run_status": "fiftyone_clip_zeroshot.labeling.shards",
    "requeue": "fiftyone_clip_zeroshot.labeling.shards",
    "LabelingError": "fiftyone_clip_zeroshot.labeling.jobs",
    "DatabaseError": "fiftyone_clip_zeroshot.labeling.jobs",
    "ClipZeroShotModel": "fiftyone_clip_zeroshot.labeling.model",
    "zero_shot_model": "fiftyone_clip_zeroshot.labeling.factory",
    "verify": "fiftyone_clip_zeroshot.labeling.curate",
    "classify": "fiftyone_clip_zeroshot.labeling.curate",
    "evaluate": "fiftyone_clip_zeroshot.labeling.curate",
    "tag_for_review": "fiftyone_clip_zeroshot.labeling.curate",
    "review_view": "fiftyone_clip_zeroshot.labeling.curate",
    "EvaluationReport": "fiftyone_clip_zeroshot.labeling.curate",
    "accept": "fiftyone_clip_zeroshot.labeling.review",
    "reject": "fiftyone_clip_zeroshot.labeling.review",
    "relabel": "fiftyone_clip_zeroshot.labeling.review",
    "clear_decisions": "fiftyone_clip_zeroshot.labeling.review",
    "review_queue": "fiftyone_clip_zeroshot.labeling.review",
    "review_report": "fiftyone_clip_zeroshot.labeling.review",
    "promote": "fiftyone_clip_zeroshot.labeling.review",
    "calibrate": "fiftyone_clip_zeroshot.labeling.calibrate",
    "Calibration": "fiftyone_clip_zeroshot.labeling.calibrate",
    "open_panel": "fiftyone_clip_zeroshot.app.panel",
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


def __getattr__(name: str):
    if name in _FIFTYONE_API:
        import importlib

        return getattr(importlib.import_module(_FIFTYONE_API[name]), name)
    raise AttributeError(f"module 'fiftyone_clip_zeroshot' has no attribute {name!r}")
