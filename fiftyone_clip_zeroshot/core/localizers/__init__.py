"""Localizers, registered by name: each turns one image into ``Evidence`` for every prompt.

A localizer is a function ``(pixels, scorer, opts, heat_hw) -> Evidence``: a heatmap per prompt
and class-agnostic candidate boxes. What follows is the same for all of them and lives in
``core.detections``: candidates (and region proposals) are scored on crops, labelled, and
de-duplicated. A new localizer is one module here plus one line in ``LOCALIZERS``.
"""

from __future__ import annotations

from collections.abc import Callable

from fiftyone_clip_zeroshot.core.localizers import occlusion, proposals, sliding_window
from fiftyone_clip_zeroshot.core.localizers.evidence import Evidence

Localizer = Callable[..., Evidence]

LOCALIZERS: dict[str, Localizer] = {
    "sliding_window": sliding_window.localize,
    "occlusion": occlusion.localize,
    "proposals": proposals.localize,
}
METHODS: tuple[str, ...] = tuple(LOCALIZERS)

__all__ = ["Evidence", "LOCALIZERS", "METHODS", "Localizer"]
