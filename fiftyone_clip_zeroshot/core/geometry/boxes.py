"""Box geometry with supervision: detections per prompt, NMS, context crops, fused windows.

Sliding window: confident windows are grouped around the best one (``sv.box_non_max_merge``
with intersection-over-smaller, so windows of every scale around one object fall together);
the windows that score well all contain the object, so their (robust) intersection is a
tight box. ``Detections.with_nms`` removes duplicates across groups and scales.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import supervision as sv

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.options import LocalizeOptions

CORE = 0.5  # windows scoring >= CORE x their group's best take part in its box
INNER = 0.8  # each side of the box: the probability-weighted INNER quantile of the members' sides
NESTED = 0.8  # sliding window: a group box this much inside a more confident one is a duplicate
SAME_OBJECT = 0.7  # a prompt's box with this share of its area inside a surer box of it frames a part of one object


def make_detections(xyxy: np.ndarray, confidence: np.ndarray, class_id: int, prompt: str) -> sv.Detections:
    """``sv.Detections`` for one prompt: class_id = prompt index and the prompt in ``data``."""
    n = len(xyxy)
    return sv.Detections(
        xyxy=np.asarray(xyxy, np.float32).reshape(n, 4),
        confidence=np.asarray(confidence, np.float32).reshape(n),
        class_id=np.full(n, class_id, dtype=int),
        data={"prompt": np.array([prompt] * n, dtype=object)},
    )


def finalize(detections: sv.Detections, opts: LocalizeOptions) -> sv.Detections:
    """Drop duplicates (NMS at ``nms_iou``), best first."""
    if len(detections) == 0:
        return detections
    detections = detections.with_nms(threshold=opts.nms_iou)
    return detections[np.argsort(-detections.confidence, kind="stable")]


def with_context(xyxy: np.ndarray, margin: float, image_hw: tuple[int, int]) -> np.ndarray:
    """Square boxes around ``xyxy`` ``(N, 4)``, ``1 + 2 * margin`` times their longer side, kept
    inside the image (shifted, then clipped): how CLIP best sees one whole object."""
    height, width = image_hw
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4)
    centre = (xyxy[:, :2] + xyxy[:, 2:]) / 2
    side = np.minimum((xyxy[:, 2:] - xyxy[:, :2]).max(1) * (1 + 2 * margin), min(height, width))[:, None]
    low = np.clip(centre - side / 2, 0, np.array([width, height]) - side)
    return np.concatenate([low, low + side], 1)


def fuse_windows(
    boxes: np.ndarray, probs: np.ndarray, class_id: int, prompt: str, opts: LocalizeOptions
) -> sv.Detections:
    """Windows ``(N, 4)`` with probabilities ``(N,)`` for one prompt → fused instance boxes."""
    keep = probs >= opts.confidence_thresh
    boxes, probs = boxes[keep], probs[keep]
    if len(boxes) == 0:
        return make_detections(np.zeros((0, 4)), np.zeros(0), class_id, prompt)
    groups = sv.box_non_max_merge(
        np.c_[boxes, probs], iou_threshold=opts.merge_overlap, overlap_metric=sv.OverlapMetric.IOS
    )
    fused, scores = [], []
    for group in map(np.asarray, groups):
        best = probs[group].max()
        members = group[probs[group] >= CORE * best]
        fused.append(_inner_box(boxes[members], probs[members]))
        scores.append(best)
    fused = make_detections(np.array(fused), np.array(scores), class_id, prompt)
    return finalize(fused.with_nms(threshold=NESTED, overlap_metric=sv.OverlapMetric.IOS), opts)


def _inner_box(boxes: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """A robust intersection of windows that contain one object: per side, the weighted quantile
    ``INNER`` towards the inside, so a few windows that clip the object do not shrink the box."""
    def quantile(values: np.ndarray, q: float) -> float:
        order = np.argsort(values)
        cumulative = np.cumsum(weights[order]) / weights.sum()
        return float(values[order][min(np.searchsorted(cumulative, q), len(values) - 1)])

    box = np.array([quantile(boxes[:, 0], INNER), quantile(boxes[:, 1], INNER),
                    quantile(boxes[:, 2], 1 - INNER), quantile(boxes[:, 3], 1 - INNER)])
    if box[2] <= box[0] or box[3] <= box[1]:
        return boxes[np.argmax(weights)]
    return box
