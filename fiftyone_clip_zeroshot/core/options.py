"""Localizer options: one validated set, checked before any image is touched."""

from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from fiftyone_clip_zeroshot.core.embedding_store import default_max_bytes, store_folder
from fiftyone_clip_zeroshot.core.errors import OptionsError
from fiftyone_clip_zeroshot.core.models.families import FAMILIES
from fiftyone_clip_zeroshot.core.models.prompt_templates import resolve_templates
from fiftyone_clip_zeroshot.core.vocabulary import ATTENTION, FILLS, METHODS, PROPOSAL_SIDE

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.models.model import ClipModel

# options for crowds of small objects in large images (aerial tiles): proposals segmented at native
# resolution in 400-px tiles, at finer scales; measured with benchmarks/photos.py --small-objects
SMALL_OBJECTS = {"proposal_tile": 400, "proposal_side": 400, "proposal_scales": (20, 60, 180)}


@dataclass(frozen=True)
class LocalizeOptions:
    """Everything that shapes a localization; sizes are fractions so they scale with the image.

    Window and context sides are fractions of the image's shorter side; strides and occluder
    sizes are fractions of the window they move in.
    """

    method: str = METHODS[0]
    window_scales: tuple[float, ...] = (0.12, 0.2, 0.32, 0.5, 0.75)
    window_stride: float = 0.34
    context_scales: tuple[float, ...] = (0.12, 0.25, 0.5, 0.75)
    context_stride: float = 0.5
    occluder_size: float = 0.25
    occluder_stride: float = 0.5
    occluder_fill: str = "mean"
    confidence_thresh: float | None = None  # None: the default of the model's family for the method
    max_detections: int = 100  # per prompt and image; a crowd past it is cut, and Localization.over_cap says so
    nms_iou: float = 0.5
    merge_overlap: float = 0.4
    dense_attention: str = "naclip"  # the dense localizer's last block: "naclip" or "clearclip"
    dense_tile: float = 0.3  # dense tiles: side (fraction of the shorter side) and step (of the tile)
    dense_stride: float = 0.5
    dense_upscale: float = 1.0  # tile input size, x the model's (position embeddings interpolated)
    verify_margins: tuple[float, ...] = (0.0, 0.1, 0.2)
    negative_prompts: tuple[str, ...] = ("a photo of background", "a photo of an object")
    prompt_templates: tuple[str, ...] | str | None = None  # a prompt ensemble: a set name or templates
    proposals: bool = True  # candidates: class-agnostic region proposals (geometry.regions), else the method's boxes
    proposal_scales: tuple[float, ...] = (100, 300)  # Felzenszwalb scales (larger: bigger segments)
    proposal_side: int = PROPOSAL_SIDE  # segmentation runs at this long side (of the image, or of each tile)
    proposal_tile: int | None = None  # None: the whole image; N: tiles of N px at native size (small objects)
    max_candidates: int = 30  # per prompt and 640x480: the proposals read, best supported (or ranked) first
    heatmap_size: int = 256
    batch_size: int | None = None
    cache: bool | str = True  # the embedding store: True (the default folder), a folder, or False (none)
    embed_all_candidates: bool = False  # store every candidate's crops, so that any later prompt reads them all back
    refine_boxes: bool = True  # of overlapping boxes of a prompt about as sure, keep the best frame (geometry.framing)

    @classmethod
    def create(cls, **options: Any) -> LocalizeOptions:
        """Build from keyword options (``method`` among them), naming any unknown one, and validate.

        An unset ``confidence_thresh`` stays None until ``for_model`` gives the family's default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise OptionsError(f"unknown option(s) {unknown}; known options: {sorted(known)}")
        given = {k: tuple(v) if isinstance(v, list) else str(v) if isinstance(v, PurePath) else v
                 for k, v in options.items() if v is not None}
        opts = replace(cls(), **given)
        opts.validate()
        return opts

    def for_model(self, model: ClipModel) -> LocalizeOptions:
        """These options for ``model``: an unset ``confidence_thresh`` becomes its family's default
        for the method (``Family.thresholds``)."""
        if self.confidence_thresh is not None:
            return self
        return replace(self, confidence_thresh=model.family.threshold(self.method))

    def validate(self) -> None:
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise OptionsError(message)

        check_method(self.method)
        for name in ("window_scales", "context_scales"):
            scales = getattr(self, name)
            check(len(scales) > 0 and all(0 < s <= 1 for s in scales),
                  f"{name} must be fractions of the shorter image side in (0, 1], got {scales}")
        for name in ("window_stride", "context_stride", "occluder_size", "occluder_stride", "dense_tile",
                     "dense_stride"):
            value = getattr(self, name)
            check(0 < value <= 1, f"{name} must be in (0, 1] (a fraction of its window), got {value}")
        check(all(0 <= m <= 2 for m in self.verify_margins),
              f"verify_margins must lie in [0, 2] (empty: no verification), got {self.verify_margins}")
        check(not isinstance(self.confidence_thresh, dict),
              "confidence_thresh per prompt (a dict) is taken by detect() and its operator; here give one number")
        for name in ("confidence_thresh", "nms_iou", "merge_overlap"):
            value = getattr(self, name)
            check(value is None or 0 <= value <= 1, f"{name} must be in [0, 1], got {value}")
        check(self.dense_attention in ATTENTION,
              f"dense_attention must be one of {ATTENTION}, got {self.dense_attention!r}")
        check(0.25 <= self.dense_upscale <= 8, f"dense_upscale must be in [0.25, 8], got {self.dense_upscale}")
        check(self.occluder_fill in FILLS, f"occluder_fill must be one of {FILLS}, got {self.occluder_fill!r}")
        check(len(self.proposal_scales) > 0 and all(s > 0 for s in self.proposal_scales),
              f"proposal_scales must be positive numbers, got {self.proposal_scales}")
        check(self.proposal_side >= 16, f"proposal_side must be >= 16 px, got {self.proposal_side}")
        check(self.proposal_tile is None or self.proposal_tile >= 32,
              f"proposal_tile must be None or >= 32 px, got {self.proposal_tile}")
        check(self.max_candidates >= 1, f"max_candidates must be >= 1, got {self.max_candidates}")
        check(self.max_detections >= 1, f"max_detections must be >= 1, got {self.max_detections}")
        check(self.heatmap_size >= 8, f"heatmap_size must be >= 8, got {self.heatmap_size}")
        check(self.batch_size is None or self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(isinstance(self.cache, (bool, str)) and self.cache != "",
              f"cache must be True, False or a folder for the embedding store, got {self.cache!r}")
        if isinstance(self.cache, str):
            store_folder(self.cache)
        if self.cache is not False:
            default_max_bytes()  # its environment variable, read before any work
        resolve_templates(self.prompt_templates)
        check(len(self.negative_prompts) > 0,
              "negative_prompts needs at least one prompt (e.g. 'a photo of background')")


def check_method(method: str) -> str:
    if method not in METHODS:
        raise OptionsError(f"method must be one of {METHODS}, got {method!r}")
    return method


def thresholds_text() -> str:
    """Each family's default thresholds, for forms: "CLIP: sliding window 0.6, ...; SigLIP: ..."."""
    return "; ".join(f"{family.name}: " + ", ".join(f"{method.replace('_', ' ')} {thresh}"
                                                   for method, thresh in family.thresholds.items())
                     for family in FAMILIES.values())


def parse_prompts(text: str | list[str] | None) -> list[str]:
    """Prompts typed as one text, separated by commas or new lines, as a list (a list is kept as is).

    The App forms take prompts as one text field, read whole when the run starts, so no
    keystroke is lost the way a list widget's last entry can be.
    """
    if not isinstance(text, str):
        return list(text or [])
    return [part.strip() for part in re.split(r"[,\n]", text) if part.strip()]


def check_prompts(prompts: Any) -> list[str]:
    """A non-empty list of non-blank prompts (a single string is one prompt); duplicates removed in order."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts or [])
    if not prompts or any(not isinstance(p, str) or not p.strip() for p in prompts):
        raise OptionsError("prompts must be a non-empty list of non-blank strings, e.g. ['a red circle']")
    return list(dict.fromkeys(p.strip() for p in prompts))
