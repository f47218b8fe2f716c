"""Class-agnostic region proposals: boxes around whatever stands out, found without any weights.

Selective search in miniature: the image (shrunk to ``PROPOSAL_SIDE`` px on its long side) is
over-segmented with Felzenszwalb's graph method at a few scales, then neighbouring segments are
merged greedily, most similar first (colour histograms, small-first, and how well the pair fills
its joint box), and every segment and merge contributes its box. An object that is one segment
gives its box at once; one split by texture or shading is rebuilt by the merges. CLIP then only
has to say what each box shows, the question it answers best on any checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import supervision as sv
import torch
from skimage.segmentation import felzenszwalb

from fiftyone_clip_zeroshot.core.geometry.windows import positions, resize
from fiftyone_clip_zeroshot.core.vocabulary import PROPOSAL_SIDE

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.options import LocalizeOptions

HIST_BINS = 16  # per colour channel
DUPLICATE_IOU = 0.9
TILE_OVERLAP = 0.25  # proposal tiles overlap by this share of their side


def candidate_boxes(pixels: torch.Tensor, opts: LocalizeOptions) -> np.ndarray:
    """The proposals of ``opts`` for uint8 ``(3, H, W)`` ``pixels``: what ``propose`` returns.

    With ``proposal_tile``, the image is cut into overlapping tiles of that many px, each segmented
    on its own at ``proposal_side`` (small objects keep their pixels), and the boxes are merged."""
    scales, side = opts.proposal_scales, opts.proposal_side
    if opts.proposal_tile is None:
        return region_proposals(pixels, scales, side=side)
    height, width = int(pixels.shape[1]), int(pixels.shape[2])
    tile = opts.proposal_tile
    step = max(1, round(tile * (1 - TILE_OVERLAP)))
    kept = np.zeros((0, 4))
    for y in positions(height, min(tile, height), step):
        for x in positions(width, min(tile, width), step):
            boxes = region_proposals(pixels[:, y : y + tile, x : x + tile], scales, side=side) + np.array([x, y] * 2)
            near = kept[(kept[:, 2] > x) & (kept[:, 0] < x + tile) & (kept[:, 3] > y) & (kept[:, 1] < y + tile)]
            if len(near) and len(boxes):  # the same segment seen from two overlapping tiles is kept once
                boxes = boxes[sv.box_iou_batch(boxes, near).max(1) <= DUPLICATE_IOU]
            kept = np.concatenate([kept, boxes])
    return kept


def proposals_key(opts: LocalizeOptions) -> str:
    """The name under which the embedding store keeps an image's proposals at these options."""
    return f"proposals:{opts.proposal_scales}:{opts.proposal_side}:{opts.proposal_tile}"


def region_proposals(
    pixels: torch.Tensor, scales: Sequence[float] = (100, 300), min_side: float = 0.03, max_area: float = 0.9,
    side: int = PROPOSAL_SIDE,
) -> np.ndarray:
    """``(N, 4)`` float64 xyxy proposals (image px) for uint8 ``(3, H, W)`` ``pixels``.

    ``scales`` are Felzenszwalb's ``scale`` at ``side`` px on the long side (larger: bigger
    segments); boxes whose shorter side is under ``min_side`` × the image's shorter side, or that
    cover more than ``max_area`` of the image, are dropped; near-duplicates (IoU > 0.9) are kept once.
    """
    height, width = int(pixels.shape[1]), int(pixels.shape[2])
    factor = min(1.0, side / max(height, width))
    small_hw = (max(1, round(height * factor)), max(1, round(width * factor)))
    image = resize(pixels, small_hw).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    min_size = max(8, (small_hw[0] * small_hw[1]) // 2000)
    boxes = np.concatenate([_grouped_boxes(image, felzenszwalb(image, scale=s, sigma=0.8, min_size=min_size))
                            for s in scales])
    boxes = boxes / np.array([small_hw[1], small_hw[0], small_hw[1], small_hw[0]]) * np.array([width, height] * 2)
    sides = boxes[:, 2:] - boxes[:, :2]
    keep = (sides.min(1) >= min_side * min(height, width)) & (sides.prod(1) <= max_area * height * width)
    return _unique(boxes[keep])


def _grouped_boxes(image: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """Boxes of every segment and of every greedy merge of neighbouring segments ``(M, 4)``."""
    count = int(segments.max()) + 1
    area_total = float(segments.size)
    ys, xs = np.mgrid[0 : segments.shape[0], 0 : segments.shape[1]]
    flat = segments.ravel()
    sizes = np.bincount(flat, minlength=count).astype(np.float64)
    boxes = np.stack([
        np.full(count, np.inf), np.full(count, np.inf), np.full(count, -np.inf), np.full(count, -np.inf)
    ], 1)
    np.minimum.at(boxes[:, 0], flat, xs.ravel())
    np.minimum.at(boxes[:, 1], flat, ys.ravel())
    np.maximum.at(boxes[:, 2], flat, xs.ravel() + 1)
    np.maximum.at(boxes[:, 3], flat, ys.ravel() + 1)
    bins = (image.reshape(-1, 3).astype(np.int64) * HIST_BINS) // 256
    hists = np.zeros((count, 3 * HIST_BINS))
    for channel in range(3):
        np.add.at(hists, (flat, channel * HIST_BINS + bins[:, channel]), 1.0)
    hists /= np.maximum(hists.sum(1, keepdims=True), 1)
    regions = {i: (sizes[i], boxes[i], hists[i]) for i in range(count)}
    neighbours = _adjacency(segments)

    def similarity(a: int, b: int) -> float:
        (sa, ba, ha), (sb, bb, hb) = regions[a], regions[b]
        joint = np.r_[np.minimum(ba[:2], bb[:2]), np.maximum(ba[2:], bb[2:])]
        fill = 1 - ((joint[2] - joint[0]) * (joint[3] - joint[1]) - sa - sb) / area_total
        return float(np.minimum(ha, hb).sum() / 3 + (1 - (sa + sb) / area_total) + fill)

    pairs = {(a, b): similarity(a, b) for a, b in neighbours}
    out = [boxes]
    merged_boxes = []
    next_id = count
    while pairs:
        a, b = max(pairs, key=pairs.get)
        (sa, ba, ha), (sb, bb, hb) = regions.pop(a), regions.pop(b)
        box = np.r_[np.minimum(ba[:2], bb[:2]), np.maximum(ba[2:], bb[2:])]
        regions[next_id] = (sa + sb, box, (ha * sa + hb * sb) / (sa + sb))
        merged_boxes.append(box)
        touching = {x for pair in pairs if a in pair or b in pair for x in pair} - {a, b}
        pairs = {pair: s for pair, s in pairs.items() if a not in pair and b not in pair}
        pairs.update({(n, next_id): similarity(n, next_id) for n in touching})
        next_id += 1
    if merged_boxes:
        out.append(np.array(merged_boxes))
    return np.concatenate(out)


def _adjacency(segments: np.ndarray) -> set[tuple[int, int]]:
    """Pairs ``(a, b)``, ``a < b``, of segments that touch horizontally or vertically."""
    pairs = np.concatenate([
        np.stack([segments[:, :-1].ravel(), segments[:, 1:].ravel()], 1),
        np.stack([segments[:-1, :].ravel(), segments[1:, :].ravel()], 1),
    ])
    pairs = np.sort(pairs[pairs[:, 0] != pairs[:, 1]], 1)
    return {(int(a), int(b)) for a, b in np.unique(pairs, axis=0)}


def _unique(boxes: np.ndarray) -> np.ndarray:
    """Boxes with near-duplicates removed (the first of each cluster, small boxes first)."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4)
    order = np.argsort((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), kind="stable")
    boxes = boxes[order]
    iou = sv.box_iou_batch(boxes, boxes)
    keep = np.ones(len(boxes), bool)
    for i in range(len(boxes)):
        if keep[i]:
            keep[i + 1 :] &= iou[i, i + 1 :] <= DUPLICATE_IOU
    return boxes[keep]
