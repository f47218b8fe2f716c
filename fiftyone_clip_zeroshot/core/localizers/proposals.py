"""Region proposals: class-agnostic boxes from the image's own segments, each read by CLIP as a crop.

The proposals (``core.regions``) need no weights; every one is scored once against all prompts
on square context crops. The heatmap is the mean probability of the proposals covering each
cell, each crediting only its central half. The other localizers use the same reading as their
candidate boxes and to sharpen their own heatmaps (``sharpen``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from fiftyone_clip_zeroshot.core.localizers.evidence import Evidence
from fiftyone_clip_zeroshot.core.regions import region_proposals
from fiftyone_clip_zeroshot.core.windows import coverage_mean, window_centres

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.options import LocalizeOptions
    from fiftyone_clip_zeroshot.core.scoring import PromptScorer


SUMMARY = "Class-agnostic regions from the image's segments, each read by CLIP"

def localize(pixels: torch.Tensor, scorer: PromptScorer, opts: LocalizeOptions, heat_hw: tuple[int, int]) -> Evidence:
    image_hw = (int(pixels.shape[1]), int(pixels.shape[2]))
    boxes = region_proposals(pixels)
    probs = scorer.boxes(pixels, boxes, opts.verify_margins or (0.1,))
    heat = coverage_mean(window_centres(boxes), probs, image_hw, heat_hw)
    return Evidence(heat, boxes, probs if opts.verify_margins else None)


def sharpen(heatmap: torch.Tensor, support: torch.Tensor, proposed: Evidence) -> Evidence:
    """A localizer's own ``heatmap`` made to agree with the proposals' (their geometric mean), with
    the proposals as candidate boxes and ``support`` as the gate. Windows that hold an object
    off-centre, or a part of it, light up around it on a model that names parts like wholes; a
    segment's crop does not, so the product peaks on the object."""
    agreed = torch.sqrt(heatmap.clamp(min=0) * proposed.heatmap.clamp(min=0))
    return Evidence(agreed, proposed.boxes, proposed.probs, support_map=support)
