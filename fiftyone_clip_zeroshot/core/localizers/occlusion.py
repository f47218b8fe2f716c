"""Occlusion: hide patches of context windows; where hiding drops a prompt's score most is the object.

Contexts are square windows at several scales; only contexts where some prompt reaches half the
confidence threshold are occluded (a drop can never exceed the context's own probability). The
drop map is the mean drop of the occluders covering each cell; the contexts' own probabilities
give the support that gates region proposals, and the heatmap is the drop map sharpened by the
proposals' map (``candidates.sharpen``). With ``proposals=False`` the heatmap is the drop map and
each confident context gives a candidate box around the cells whose hiding dropped the prompt most.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import supervision as sv
import torch

from fiftyone_clip_zeroshot.core.geometry.windows import (
    OCCLUDED_CROP,
    coverage_mean,
    positions,
    window_centres,
    window_grids,
)
from fiftyone_clip_zeroshot.core.localizers import candidates
from fiftyone_clip_zeroshot.core.localizers.evidence import Evidence
from fiftyone_clip_zeroshot.core.vocabulary import FILLS

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.models.model import ClipModel
    from fiftyone_clip_zeroshot.core.options import LocalizeOptions
    from fiftyone_clip_zeroshot.core.scoring import PromptScorer

SUMMARY = "Hide patches of context windows; where the score drops is the object"
OCCLUSION_GRID = 32  # cells per side of a context's drop map
DROP_FRACTION = 0.5  # a cell belongs to the object where its drop is >= this x the context's largest


def localize(pixels: torch.Tensor, scorer: PromptScorer, opts: LocalizeOptions, heat_hw: tuple[int, int]) -> Evidence:
    image_hw = (int(pixels.shape[1]), int(pixels.shape[2]))
    occluders, drops, contexts, base = _occlude(pixels, scorer, opts)
    heat = coverage_mean(occluders.reshape(-1, 4), drops.reshape(-1, scorer.count), image_hw, heat_hw)
    support = coverage_mean(window_centres(contexts), base, image_hw, heat_hw)
    if opts.proposals:
        return candidates.sharpen(heat, support, candidates.read(pixels, scorer, opts, heat_hw, support))
    base, drops = base.cpu().numpy(), drops.cpu().numpy()
    boxes = [
        _drop_box(contexts[c], occluders[c], drops[c, :, p])
        for p in range(scorer.count)
        for c in np.flatnonzero(base[:, p] >= opts.confidence_thresh)
        if drops[c, :, p].max() > 0
    ]
    return Evidence(heat, np.array(boxes, np.float64).reshape(-1, 4), support_map=support)


def _drop_box(context: np.ndarray, occluders: np.ndarray, drops: np.ndarray) -> np.ndarray:
    """The box of the cells of ``context`` whose hiding dropped the score most (``(K, 4)``
    occluders in image px and their ``(K,)`` drops), via ``sv.mask_to_xyxy``."""
    x1, y1, x2, y2 = context
    cell = np.array([x2 - x1, y2 - y1, x2 - x1, y2 - y1]) / OCCLUSION_GRID
    local = occluders - np.array([x1, y1, x1, y1])
    grid = (OCCLUSION_GRID, OCCLUSION_GRID)
    drop_map = coverage_mean(local, torch.from_numpy(drops[:, None]), (y2 - y1, x2 - x1), grid)[0].numpy()
    mask = drop_map >= DROP_FRACTION * drop_map.max()
    cx1, cy1, cx2, cy2 = sv.mask_to_xyxy(mask[None])[0].astype(np.float64)
    return np.array([x1, y1, x1, y1]) + np.array([cx1, cy1, cx2 + 1, cy2 + 1]) * cell


def _occluder_masks(size: int, opts: LocalizeOptions, device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """``(K, 1, S, S)`` keep-masks (0 where hidden) and their ``(K, 4)`` boxes in input pixels."""
    side = max(1, round(opts.occluder_size * size))
    starts = positions(size, side, max(1, round(side * opts.occluder_stride)))
    yy, xx = np.meshgrid(starts, starts, indexing="ij")
    boxes = np.stack([xx.ravel(), yy.ravel(), xx.ravel() + side, yy.ravel() + side], 1)
    masks = torch.ones(len(boxes), 1, size, size, device=device)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, :, y1:y2, x1:x2] = 0
    return masks, boxes.astype(np.float64)


def _occluded_keys(windows: np.ndarray, occluders: np.ndarray, fill: str) -> np.ndarray:
    """Store keys of each window (``WindowGrid.keys``) with each occluder (in input px) hidden by
    ``fill``, window-major like the occluded crops."""
    count = len(occluders)
    head = np.repeat(windows, count, 0)
    head[:, 0] = OCCLUDED_CROP
    tail = np.tile(np.concatenate([occluders.astype(np.int64), np.full((count, 1), FILLS.index(fill))], 1),
                   (len(windows), 1))
    return np.concatenate([head, tail], 1)


def _fill_value(model: ClipModel, fill: str, device: torch.device) -> torch.Tensor:
    rgb = {"mean": [255 * m for m in model.image_mean], "black": [0.0] * 3, "gray": [127.5] * 3}[fill]
    return torch.tensor(rgb, device=device).view(1, 3, 1, 1)


def _occlude(
    pixels: torch.Tensor, scorer: PromptScorer, opts: LocalizeOptions
) -> tuple[np.ndarray, torch.Tensor, np.ndarray, torch.Tensor]:
    """Occluder boxes ``(C, K, 4)`` in image px, probability drops ``(C, K, P)`` (clamped at 0;
    0 for contexts that were not occluded), context boxes ``(C, 4)`` and their probabilities ``(C, P)``."""
    size = scorer.model.image_size
    keep, occluders = _occluder_masks(size, opts, pixels.device)
    fill = _fill_value(scorer.model, opts.occluder_fill, pixels.device)
    count = len(keep)
    all_boxes, all_drops, all_contexts, all_base = [], [], [], []
    for grid in window_grids(tuple(pixels.shape[1:]), opts.context_scales, opts.context_stride, size):
        crops = grid.cropper(pixels)
        windows = grid.keys()
        base = scorer(scorer.encode(len(grid), crops, keys=windows))
        active = torch.nonzero(base.max(1).values >= opts.confidence_thresh / 2).flatten().cpu().numpy()

        def occluded(idx: slice | np.ndarray, crops=crops, active=active) -> torch.Tensor:
            flat = np.arange(len(active) * count)[idx]
            mask = keep[flat % count]
            return crops(active[flat // count]) * mask + fill * (1 - mask)

        drops = torch.zeros(len(grid), count, base.shape[1], device=base.device)
        if len(active):
            keys = _occluded_keys(windows[active], occluders, opts.occluder_fill)
            hidden = scorer(scorer.encode(len(active) * count, occluded, keys=keys)).view(len(active), count, -1)
            drops[active] = (base[active][:, None, :] - hidden).clamp(min=0)
        contexts = grid.boxes
        scale = (contexts[:, 2:] - contexts[:, :2]) / size
        all_boxes.append(np.tile(contexts[:, None, :2], (1, 1, 2)) + occluders[None] * np.tile(scale, 2)[:, None, :])
        all_drops.append(drops)
        all_contexts.append(contexts)
        all_base.append(base)
    return np.concatenate(all_boxes), torch.cat(all_drops), np.concatenate(all_contexts), torch.cat(all_base)
