"""A prompt-free prior of how much a box holds one thing: how unlike its surroundings it looks.

Region proposals come without a score. To rank them before any prompt is known (``fz.propose``
over a collection stores it as each candidate's confidence), each box's colour histogram is
compared with that of the ring just around it: a shape on a plain ground differs from its ring
completely, a box cut through a uniform area or across a texture hardly at all.
"""

from __future__ import annotations

import numpy as np
import torch

from fiftyone_clip_zeroshot.core.geometry.windows import crop_bounds, resize

OBJECTNESS_SIDE = 128  # histograms are counted on the image shrunk to this long side
COLOUR_BINS = 6  # per channel: 216 colours
RING = 0.25  # the ring reaches this share of the box's side beyond each edge


def objectness(pixels: torch.Tensor, xyxy: np.ndarray) -> np.ndarray:
    """``(N,)`` scores in [0, 1] of xyxy boxes (image px) in uint8 ``(3, H, W)`` ``pixels``: half
    the L1 distance between the colour histograms of each box and of the ring around it (0 where
    the box leaves no ring: it is the whole image)."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    height, width = int(pixels.shape[1]), int(pixels.shape[2])
    scale = min(1.0, OBJECTNESS_SIDE / max(height, width))
    small_hw = (max(1, round(height * scale)), max(1, round(width * scale)))
    small = resize(pixels, small_hw).round().clamp(0, 255).to(torch.int64).cpu().numpy()
    bins = small * COLOUR_BINS // 256
    colours = (bins[0] * COLOUR_BINS + bins[1]) * COLOUR_BINS + bins[2]
    boxes = xyxy * np.array([small_hw[1] / width, small_hw[0] / height] * 2)
    reach = RING * (boxes[:, 2:] - boxes[:, :2])
    inner = crop_bounds(boxes, small_hw)
    outer = crop_bounds(np.concatenate([boxes[:, :2] - reach, boxes[:, 2:] + reach], 1), small_hw)
    return np.array([_contrast(colours, a, b) for a, b in zip(inner, outer)])


def _contrast(colours: np.ndarray, inner: np.ndarray, outer: np.ndarray) -> float:
    inside = _histogram(colours, inner)
    ring = _histogram(colours, outer) - inside
    if ring.sum() == 0:
        return 0.0
    return float(np.abs(inside / inside.sum() - ring / ring.sum()).sum() / 2)


def _histogram(colours: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    left, top, right, bottom = bounds
    return np.bincount(colours[top:bottom, left:right].ravel(), minlength=COLOUR_BINS ** 3).astype(np.float64)
