"""Box refinement by framing: among a prompt's overlapping boxes about as sure, the one that best
frames the prompt's map.

CLIP reads a crop of an object with a strip of background, or of most of the object, about as
surely as the tight crop (a loose box 0.907 against the tight one's 0.904 in a photo scene), so
the surest of overlapping boxes is often a loose or partial frame, and the tight one is then
suppressed as its duplicate. A map shows the object's extent (the candidates' map,
``Evidence.framing``: each candidate's crop probability over its central half): around each box,
the cells reaching ``FRAME_LEVEL`` x their peak form the object's blob, and a box frames it well
when it covers the blob and little else (their IoU). Duplicates are then removed in the order of
confidence plus ``FRAME_WEIGHT`` x that framing, so a box at most that much less sure wins by
framing better; every box keeps its own confidence.
"""

from __future__ import annotations

import numpy as np

from fiftyone_clip_zeroshot.core.geometry.windows import box_cells

FRAME_LEVEL = 0.5  # the blob: cells at or above this x the map's peak around the box
FRAME_GROW = 1.5  # around the box: the box grown this many times about its centre (a part's object reaches out of it)
FRAME_WEIGHT = 0.05  # a box this much less sure than an overlapping one may still win by framing better


def framing(heatmap: np.ndarray, boxes: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """``(N,)`` in [0, 1]: the IoU, in cells of the ``(h, w)`` ``heatmap``, of each xyxy box (image
    px) with the cells around it (the box grown ``FRAME_GROW`` times) reaching ``FRAME_LEVEL`` x
    their maximum; 0 where the map is not positive there."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centre, half = (boxes[:, :2] + boxes[:, 2:]) / 2, (boxes[:, 2:] - boxes[:, :2]) * FRAME_GROW / 2
    inner = box_cells(boxes, image_hw, heatmap.shape)
    outer = box_cells(np.concatenate([centre - half, centre + half], 1), image_hw, heatmap.shape)
    out = np.zeros(len(boxes))
    for i, ((x1, y1, x2, y2), (gx1, gy1, gx2, gy2)) in enumerate(zip(zip(*inner), zip(*outer))):
        around = heatmap[gy1:gy2, gx1:gx2]
        peak = around.max()
        if peak <= 0:
            continue
        blob = around >= FRAME_LEVEL * peak
        box = np.zeros_like(blob)
        box[y1 - gy1:y2 - gy1, x1 - gx1:x2 - gx1] = True
        out[i] = (blob & box).sum() / (blob | box).sum()
    return out
