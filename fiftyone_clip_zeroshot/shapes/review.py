"""A scripted reviewer for the shapes world: decides each auto-label from the ground truth, as a
careful person would, so the review loop and calibration can be measured (tests, benchmarks)."""

from __future__ import annotations

import fiftyone as fo
import numpy as np
import supervision as sv

from fiftyone_clip_zeroshot.labeling.curation.decisions import (
    ACCEPTED,
    REJECTED,
    accept,
    reject,
    relabel,
    reviewed_labels,
)
from fiftyone_clip_zeroshot.labeling.runs.labels import pixel_xyxy

MATCH_IOU = 0.5


def verdicts_from_ground_truth(samples: fo.core.collections.SampleCollection, label_field: str,
                               gt_field: str = "ground_truth") -> dict[str, str]:
    """Label id → ``"accepted"`` (an object of its class is there, IoU ≥ 0.5), the class to
    relabel it to (an object of another class is there), or ``"rejected"``."""
    verdicts = {}
    columns = samples.values([f"{label_field}.detections", f"{gt_field}.detections"])
    for predictions, truth in zip(*columns):
        if not predictions:
            continue
        truth = truth or []
        iou = (sv.box_iou_batch(pixel_xyxy(predictions, (1, 1)), pixel_xyxy(truth, (1, 1))) if truth
               else np.zeros((len(predictions), 0)))
        for row, prediction in zip(iou, predictions):
            matched = [t.label for t, overlap in zip(truth, row) if overlap >= MATCH_IOU]
            verdicts[prediction.id] = ACCEPTED if prediction.label in matched else matched[0] if matched else REJECTED
    return verdicts


def review_from_ground_truth(samples: fo.core.collections.SampleCollection, label_field: str,
                             verdicts: dict[str, str]) -> None:
    """Record the ``verdicts`` of the labels of ``samples`` as decisions."""
    ids = set(samples.values(f"{label_field}.detections.id", unwind=True))
    accept(samples, label_field, [i for i in ids if verdicts[i] == ACCEPTED])
    reject(samples, label_field, [i for i in ids if verdicts[i] == REJECTED])
    for label_id in ids:
        if verdicts[label_id] not in (ACCEPTED, REJECTED):
            relabel(samples, label_field, [label_id], verdicts[label_id])


def kept_right(samples: fo.core.collections.SampleCollection, label_field: str, verdicts: dict[str, str],
               thresholds: dict[str, float]) -> tuple[int, int]:
    """(right, all) among the labels of ``samples`` at/above their prompt's threshold."""
    kept = [label for label in reviewed_labels(samples, label_field) if label.confidence >= thresholds[label.prompt]]
    return sum(verdicts[label.label_id] == ACCEPTED for label in kept), len(kept)
