"""Zero-shot object localization and detection with CLIP, for FiftyOne.

The core (``load_model``, ``localize``) does not import FiftyOne; ``detect`` and
``ClipZeroShotModel`` do, and are imported on first use.
"""

from fiftyone_clip_zeroshot.core import (
    ClipModel,
    ImageLoadError,
    Localization,
    LocalizeOptions,
    ModelLoadError,
    OptionsError,
    load_model,
    localize,
)

_FIFTYONE_API = {
    "detect": "fiftyone_clip_zeroshot.labeling.detect",
    "DetectJob": "fiftyone_clip_zeroshot.labeling.detect",
    "DetectError": "fiftyone_clip_zeroshot.labeling.detect",
    "ClipZeroShotModel": "fiftyone_clip_zeroshot.labeling.model",
}

__all__ = [
    "ClipModel",
    "ImageLoadError",
    "Localization",
    "LocalizeOptions",
    "ModelLoadError",
    "OptionsError",
    "load_model",
    "localize",
    *_FIFTYONE_API,
]


def __getattr__(name: str):
    if name in _FIFTYONE_API:
        import importlib

        return getattr(importlib.import_module(_FIFTYONE_API[name]), name)
    raise AttributeError(f"module 'fiftyone_clip_zeroshot' has no attribute {name!r}")
