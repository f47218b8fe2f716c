"""Evidence → detections, the same for every localizer.

Every candidate box is read by CLIP on tight square crops (``verify_margins``), once for all
prompts: that crop probability is the box's confidence, provided the localizer's own support
for the prompt inside the box reaches ``SUPPORT_GATE`` x the threshold (two independent views
must agree, which keeps absent prompts from drawing boxes). Each box takes the one prompt it
fits best; boxes below ``confidence_thresh`` go, and so do boxes that are parts of a larger,
about as confident box of another prompt. Duplicates are removed by IoU NMS and then by
nesting, and each prompt keeps its ``max_detections`` best.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import supervision as sv
import torch

from fiftyone_clip_zeroshot.core.boxes import NESTED, finalize, make_detections
from fiftyone_clip_zeroshot.core.localizers.evidence import Evidence

SUPPORT_GATE = 0.5  # a box can take a prompt only where the localizer's own support reaches this x the threshold
PART_MARGIN = 0.1  # a part survives a larger box of another prompt only if this much more confident

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.options import LocalizeOptions
    from fiftyone_clip_zeroshot.core.scoring import PromptScorer


def detect_objects(
    pixels: torch.Tensor, evidence: Evidence, scorer: PromptScorer, prompts: list[str], opts: LocalizeOptions
) -> list[sv.Detections]:
    """One ``sv.Detections`` per prompt (``class_id`` = prompt index, xyxy in image px)."""
    boxes = evidence.boxes
    if len(boxes) == 0:
        return [make_detections(np.zeros((0, 4)), np.zeros(0), p, prompt) for p, prompt in enumerate(prompts)]
    support = box_support(evidence.support, boxes, tuple(pixels.shape[1:])).clamp(0, 1).cpu().numpy()
    if opts.verify_margins:
        probs = evidence.probs if evidence.probs is not None else scorer.boxes(pixels, boxes, opts.verify_margins)
        confidence = probs.cpu().numpy() * (support >= SUPPORT_GATE * opts.confidence_thresh)
    else:
        confidence = support
    label = confidence.argmax(1)
    score = confidence[np.arange(len(boxes)), label]
    keep = score >= opts.confidence_thresh
    keep &= ~_parts_of_others(boxes, label, score, keep)
    return [
        _dedupe(make_detections(boxes[keep & (label == p)], score[keep & (label == p)], p, prompt), opts)
        for p, prompt in enumerate(prompts)
    ]


def box_support(heatmap: torch.Tensor, boxes: np.ndarray, image_hw: tuple[int, int]) -> torch.Tensor:
    """``(N, P)``: each prompt's heatmap maximum over the cells inside each xyxy box."""
    height, width = image_hw
    h, w = heatmap.shape[1:]
    cells = np.asarray(boxes, np.float64) * np.array([w / width, h / height, w / width, h / height])
    x1 = np.clip(np.floor(cells[:, 0]), 0, w - 1).astype(int)
    y1 = np.clip(np.floor(cells[:, 1]), 0, h - 1).astype(int)
    x2 = np.clip(np.ceil(cells[:, 2]), x1 + 1, w).astype(int)
    y2 = np.clip(np.ceil(cells[:, 3]), y1 + 1, h).astype(int)
    return torch.stack([heatmap[:, b:d, a:c].amax((1, 2)) for a, b, c, d in zip(x1, y1, x2, y2)])


def _parts_of_others(boxes: np.ndarray, label: np.ndarray, score: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """``(N,)``: kept boxes lying (``NESTED`` of their area) inside a larger kept box of another
    label that they do not beat by ``PART_MARGIN``. A part of an object often looks like another
    class (a star's arm is a triangle), less surely than the whole object, framed, looks like
    itself; a whole object inside a box that also holds a neighbour is surer of itself than that
    box is."""
    idx = np.flatnonzero(kept)
    if len(idx) < 2:
        return np.zeros(len(boxes), bool)
    b = boxes[idx]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iw = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    inside = (iw * ih / np.maximum(area[:, None], 1e-9) >= NESTED) & (area[:, None] < area[None, :])
    inside &= (label[idx][:, None] != label[idx][None, :]) & (score[idx][:, None] < score[idx][None, :] + PART_MARGIN)
    parts = np.zeros(len(boxes), bool)
    parts[idx] = inside.any(1)
    return parts


def _dedupe(detections: sv.Detections, opts: LocalizeOptions) -> sv.Detections:
    """IoU NMS, then boxes nested in a more confident one, then the ``max_detections`` best."""
    detections = finalize(detections, opts)
    if len(detections) == 0:
        return detections
    return finalize(detections.with_nms(threshold=NESTED, overlap_metric=sv.OverlapMetric.IOS), opts)
