"""The FiftyOne-free core: CLIP wrapper, window geometry, localizers and box extraction."""

from fiftyone_clip_zeroshot.core.embedding_store import cache_info, clear_cache
from fiftyone_clip_zeroshot.core.errors import ClipZeroShotError
from fiftyone_clip_zeroshot.core.images import ImageLoadError, load_image
from fiftyone_clip_zeroshot.core.localize import Localization, localize, propose
from fiftyone_clip_zeroshot.core.model import ClipModel, ModelLoadError, load_model
from fiftyone_clip_zeroshot.core.options import SMALL_OBJECTS, LocalizeOptions, OptionsError

__all__ = [
    "SMALL_OBJECTS",
    "ClipModel",
    "ClipZeroShotError",
    "ImageLoadError",
    "Localization",
    "LocalizeOptions",
    "ModelLoadError",
    "OptionsError",
    "load_image",
    "load_model",
    "localize",
    "propose",
    "cache_info",
    "clear_cache",
]
