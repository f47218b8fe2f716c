"""Sliding window: square windows at several scales, each scored by CLIP as a whole image.

The windows' map is the scale-averaged mean probability of the windows covering each cell, each
window crediting only its central half; it gates which prompt a box may take. Candidate boxes are
region proposals, and the heatmap is the windows' map sharpened by the proposals' map
(``candidates.sharpen``); with ``proposals=False``, the heatmap is the windows' map and the boxes
are the confident windows of each prompt fused into one box per group (``boxes.fuse_windows``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from fiftyone_clip_zeroshot.core.geometry.boxes import fuse_windows
from fiftyone_clip_zeroshot.core.geometry.windows import coverage_cells, mean_of_cells, window_centres, window_grids
from fiftyone_clip_zeroshot.core.localizers import candidates
from fiftyone_clip_zeroshot.core.localizers.evidence import Evidence

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.options import LocalizeOptions
    from fiftyone_clip_zeroshot.core.scoring import PromptScorer

SUMMARY = "Score windows at several scales; the windows decide which prompt a box may take"


def localize(pixels: torch.Tensor, scorer: PromptScorer, opts: LocalizeOptions, heat_hw: tuple[int, int]) -> Evidence:
    image_hw = (int(pixels.shape[1]), int(pixels.shape[2]))
    scales = score_windows(pixels, scorer, opts.window_scales, opts.window_stride)
    heat = mean_of_cells([coverage_cells(window_centres(b), p, image_hw, heat_hw) for b, p in scales])
    if opts.proposals:
        return candidates.sharpen(heat, heat, candidates.read(pixels, scorer, opts, heat_hw, heat))
    boxes, probs = np.concatenate([b for b, _ in scales]), torch.cat([p for _, p in scales]).cpu().numpy()
    fused = [fuse_windows(boxes, probs[:, p], p, "", opts).xyxy for p in range(scorer.count)]
    return Evidence(heat, np.concatenate(fused).astype(np.float64))


def score_windows(
    pixels: torch.Tensor, scorer: PromptScorer, scales: Sequence[float], stride: float
) -> list[tuple[np.ndarray, torch.Tensor]]:
    """Per scale: window boxes ``(N, 4)`` (numpy, image px) and their probabilities ``(N, P)``."""
    out = []
    for grid in window_grids(tuple(pixels.shape[1:]), scales, stride, scorer.model.image_size):
        embeddings = scorer.encode(len(grid), grid.cropper(pixels), keys=grid.keys())
        out.append((grid.boxes, scorer(embeddings)))
    return out
