"""Localizers, registered by name: each turns one image into ``Evidence`` for every prompt.

A localizer is a module with a function ``localize(pixels, scorer, opts, heat_hw) -> Evidence``
(a heatmap per prompt and class-agnostic candidate boxes) and a one-line ``SUMMARY`` for forms.
What follows is the same for all of them and lives here too: candidates (and region proposals)
are scored on crops, labelled and de-duplicated (``detections``, ``candidates``), and the dense
patch tokens (``patch_tokens``). A new localizer is one module here plus one line in
``_MODULES``, its name in ``core.vocabulary.METHODS`` (which options are checked against) and its
options in ``LocalizeOptions``.

Imports: core.errors, core.options, core.vocabulary, core.scoring, core.models, core.geometry
"""

from __future__ import annotations

from collections.abc import Callable

from fiftyone_clip_zeroshot.core.localizers import dense, occlusion, proposals, sliding_window
from fiftyone_clip_zeroshot.core.localizers.evidence import Evidence
from fiftyone_clip_zeroshot.core.vocabulary import METHODS

Localizer = Callable[..., Evidence]

_MODULES = {
    "sliding_window": sliding_window,
    "occlusion": occlusion,
    "proposals": proposals,
    "dense": dense,
}
LOCALIZERS: dict[str, Localizer] = {name: module.localize for name, module in _MODULES.items()}
SUMMARIES: dict[str, str] = {name: module.SUMMARY for name, module in _MODULES.items()}

__all__ = ["Evidence", "LOCALIZERS", "METHODS", "SUMMARIES", "Localizer"]
