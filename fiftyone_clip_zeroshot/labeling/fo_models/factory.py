"""``zero_shot_model``: the localizers as the FiftyOne model that suits this install, for
``dataset.apply_model`` and the zoo source."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from fiftyone_clip_zeroshot.core.models.model import DEFAULT_MODEL, ClipModel
from fiftyone_clip_zeroshot.labeling.fo_models.model import ClipZeroShotModel


@lru_cache(maxsize=1)
def data_loader_ready() -> bool:
    """Whether ``fiftyone.utils.torch`` (FiftyOne's DataLoader path) imports here."""
    try:
        import fiftyone.utils.torch  # noqa: F401
    except (ImportError, RuntimeError):  # no torchvision, or one built for another torch
        return False
    return True


def zero_shot_model(
    prompts: str | Sequence[str],
    method: str = "sliding_window",
    model: str | ClipModel = DEFAULT_MODEL,
    device: str | None = None,
    **options: Any,
) -> ClipZeroShotModel:
    """Zero-shot detection of ``prompts`` as a FiftyOne model, predicting ``fo.Detections`` per image.

    Where FiftyOne's torch utilities import (they need torchvision), it is the
    ``SupportsGetItem`` / ``TorchModelMixin`` model (``LoaderClipZeroShotModel``):
    ``apply_model(..., batch_size, num_workers)`` decodes images in DataLoader workers and
    localizes each batch of images together. Elsewhere each image is decoded in turn, and
    FiftyOne ignores ``num_workers``.

    Args:
        prompts: one prompt or a list, e.g. ``["a red circle", "a butterfly"]``.
        method: ``"sliding_window"``, ``"occlusion"``, ``"proposals"`` or ``"dense"``.
        model: a hub id, a local CLIP folder, a packaged name (``"shapes-world"``) or a ``ClipModel``.
        device: ``"cuda"``, ``"cpu"`` or None (the GPU when there is one); ignored for a ``ClipModel``.
        **options: ``LocalizeOptions`` fields (``confidence_thresh``, ``batch_size``, ...).
    """
    if data_loader_ready():
        from fiftyone_clip_zeroshot.labeling.fo_models.loader import LoaderClipZeroShotModel  # needs torchvision

        return LoaderClipZeroShotModel(prompts, method=method, model=model, device=device, **options)
    return ClipZeroShotModel(prompts, method=method, model=model, device=device, **options)
