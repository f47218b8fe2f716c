"""Region proposals: class-agnostic boxes from the image's own segments, each read by CLIP as a
crop, and nothing else: the shared candidate reader (``core.localizers.candidates``) on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fiftyone_clip_zeroshot.core.localizers import candidates
from fiftyone_clip_zeroshot.core.localizers.evidence import Evidence

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.options import LocalizeOptions
    from fiftyone_clip_zeroshot.core.scoring import PromptScorer

SUMMARY = "Class-agnostic regions from the image's segments, each read by CLIP"


def localize(pixels: torch.Tensor, scorer: PromptScorer, opts: LocalizeOptions, heat_hw: tuple[int, int]) -> Evidence:
    return candidates.read(pixels, scorer, opts, heat_hw)
