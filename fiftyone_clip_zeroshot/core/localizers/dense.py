"""Dense: CLIP's patch tokens read as a per-patch classifier, one encoder forward per tile.

The map is ``patch_tokens.dense_map`` (how the tokens are made to keep their own place, and the
tiling, are described there). Candidate boxes are the connected regions of each prompt's map at
a few levels (read on crops by the shared tail), or region proposals with ``proposals=True``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from skimage.measure import label as connected_regions
from skimage.measure import regionprops

from fiftyone_clip_zeroshot.core.localizers import candidates
from fiftyone_clip_zeroshot.core.localizers.evidence import Evidence
from fiftyone_clip_zeroshot.core.localizers.patch_tokens import dense_map

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.options import LocalizeOptions
    from fiftyone_clip_zeroshot.core.scoring import PromptScorer

SUMMARY = "CLIP's patch tokens as a per-patch classifier, one forward per tile: the cheapest map"
REGION_LEVELS = (0.25, 0.5, 0.75)  # x the confidence threshold: regions at several levels split touching objects
MIN_REGION_CELLS = 2


def localize(pixels: torch.Tensor, scorer: PromptScorer, opts: LocalizeOptions, heat_hw: tuple[int, int]) -> Evidence:
    image_hw = (int(pixels.shape[1]), int(pixels.shape[2]))
    heat = dense_map(pixels, scorer, opts, heat_hw)
    if opts.proposals:
        return candidates.sharpen(heat, heat, candidates.read(pixels, scorer, opts, heat_hw, heat))
    return Evidence(heat, region_boxes(heat, image_hw, opts.confidence_thresh))


def region_boxes(heat: torch.Tensor, image_hw: tuple[int, int], thresh: float) -> np.ndarray:
    """``(N, 4)`` xyxy image-px boxes of the connected regions of every prompt's map at
    ``REGION_LEVELS`` x ``thresh`` (class-agnostic: the shared tail labels them)."""
    maps = heat.cpu().numpy()
    h, w = maps.shape[1:]
    scale = np.array([image_hw[1] / w, image_hw[0] / h] * 2)
    boxes = [
        (region.bbox[1], region.bbox[0], region.bbox[3], region.bbox[2])
        for level in REGION_LEVELS
        for prompt_map in maps
        for region in regionprops(connected_regions(prompt_map >= max(level * thresh, 1e-6)))
        if region.area >= MIN_REGION_CELLS
    ]
    if not boxes:
        return np.zeros((0, 4))
    return np.unique(np.asarray(boxes, np.float64), axis=0) * scale
