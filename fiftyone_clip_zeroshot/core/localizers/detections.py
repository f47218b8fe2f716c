"""Evidence → detections, the same for every localizer.

Every candidate box is read by CLIP on tight square crops (``verify_margins``), once for all
prompts: that crop probability is the box's confidence, provided the localizer's own support
for the prompt inside the box reaches ``SUPPORT_GATE`` x the threshold (two independent views
must agree, which keeps absent prompts from drawing boxes). Each box takes the one prompt it
fits best; boxes below ``confidence_thresh`` go, and so do boxes that are parts of a larger,
about as confident box of another prompt. Duplicates are removed by IoU NMS and then by
overlap with a surer box of the same prompt (with ``refine_boxes``, in the order of confidence
plus how well each box frames the prompt's map: ``core.geometry.framing``), and each prompt
keeps its ``max_detections`` best (the count of the others is reported).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import supervision as sv
import torch

from fiftyone_clip_zeroshot.core.geometry.boxes import NESTED, SAME_OBJECT, finalize, make_detections
from fiftyone_clip_zeroshot.core.geometry.framing import FRAME_WEIGHT, framing
from fiftyone_clip_zeroshot.core.geometry.windows import box_support
from fiftyone_clip_zeroshot.core.localizers.evidence import SUPPORT_GATE, Evidence

PART_MARGIN = 0.1  # a part survives a larger box of another prompt only if this much more confident

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.options import LocalizeOptions
    from fiftyone_clip_zeroshot.core.scoring import PromptScorer


def detect_objects(
    pixels: torch.Tensor, evidence: Evidence, scorer: PromptScorer, prompts: list[str], opts: LocalizeOptions
) -> list[tuple[sv.Detections, int]]:
    """Per prompt: its ``sv.Detections`` (``class_id`` = prompt index, xyxy in image px) and how
    many more boxes it had past ``max_detections``."""
    boxes = evidence.boxes
    if len(boxes) == 0:
        return [(make_detections(np.zeros((0, 4)), np.zeros(0), p, prompt), 0) for p, prompt in enumerate(prompts)]
    image_hw = (int(pixels.shape[1]), int(pixels.shape[2]))
    support = evidence.box_support
    if support is None:
        support = box_support(evidence.support, boxes, image_hw)
    support = support.clamp(0, 1).cpu().numpy()
    if opts.verify_margins:
        probs = evidence.probs if evidence.probs is not None else scorer.boxes(pixels, boxes, opts.verify_margins)
        confidence = probs.cpu().numpy() * (support >= SUPPORT_GATE * opts.confidence_thresh)
    else:
        confidence = support
    label = confidence.argmax(1)
    score = confidence[np.arange(len(boxes)), label]
    keep = (score >= opts.confidence_thresh) & (score > 0)  # at a threshold of 0, a box nothing vouched for
    keep &= ~_parts_of_others(boxes, label, score, keep)
    heat = evidence.framing.detach().cpu().numpy() if opts.refine_boxes else None
    out = []
    for p, prompt in enumerate(prompts):
        mine = keep & (label == p)
        rank = None if heat is None else score[mine] + FRAME_WEIGHT * framing(heat[p], boxes[mine], image_hw)
        out.append(_dedupe(make_detections(boxes[mine], score[mine], p, prompt), opts, rank))
    return out


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


def _dedupe(detections: sv.Detections, opts: LocalizeOptions, rank: np.ndarray | None = None
            ) -> tuple[sv.Detections, int]:
    """IoU NMS, then boxes that lie mostly (``SAME_OBJECT``) inside a more confident one, then the
    ``max_detections`` best, and how many more there were. A box of a prompt mostly inside a surer
    box of that prompt frames a part of the same object (a strip of a circle, a star's arm).
    ``rank``: the order in which boxes suppress others (default: confidence); the survivors keep
    their own confidence and are returned best first."""
    if rank is not None:
        detections.data["confidence"], detections.confidence = detections.confidence, rank.astype(np.float32)
    detections = finalize(detections, opts)
    if len(detections):
        detections = finalize(detections.with_nms(threshold=SAME_OBJECT, overlap_metric=sv.OverlapMetric.IOS), opts)
    if rank is not None:
        detections.confidence = detections.data.pop("confidence")
        detections = detections[np.argsort(-detections.confidence, kind="stable")]
    return detections[: opts.max_detections], max(0, len(detections) - opts.max_detections)
