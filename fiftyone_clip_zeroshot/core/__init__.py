"""The FiftyOne-free core. Its wings: ``models`` (loading and encoding), ``geometry`` (pixels and
boxes), ``localizers`` (one module per method and the parts they share). At its top, what every
piece uses: options and their vocabulary, scoring, the embedding store, errors, and the entry
points ``localize``, ``classify`` and ``quality``.

Imports: core
"""

from fiftyone_clip_zeroshot.core.embedding_store import cache_info, clear_cache
from fiftyone_clip_zeroshot.core.errors import ClipZeroShotError
from fiftyone_clip_zeroshot.core.geometry.images import ImageLoadError, load_image
from fiftyone_clip_zeroshot.core.localize import Localization, localize, propose
from fiftyone_clip_zeroshot.core.models.model import ClipModel, ModelLoadError, load_model
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
