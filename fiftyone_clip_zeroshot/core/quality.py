"""Localization quality, image by image: the figures ``benchmarks/quality.py`` and
``benchmarks/real_clip.py`` print, whatever the images and the model."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import supervision as sv
from supervision.metrics import MeanAveragePrecision

from fiftyone_clip_zeroshot.core.localize import Localization

PEAK_MIN_SIDE = 64  # objects smaller than this (px) are left out of "peak in box"

COLUMNS = (f"{'model':<22} {'set':<7} {'method':<15} {'mAP@.5':>7} {'mAP@.5:.95':>10} {'recall@.5':>9} "
           f"{'absent FP (pairs)':>17} {'absent FP (scenes)':>18} {'dup/object':>10} {'peak in box':>11} "
           f"{'s/image':>8}")


@dataclass
class Quality:
    """Localization quality over a set of images, every class prompted on every image."""

    method: str
    scenes: int
    map50: float
    map50_95: float
    recall50: float
    absent_scene_fp_rate: float  # images where any prompt of an absent class drew a box
    absent_prompt_fp_rate: float  # (image, absent prompt) pairs that drew a box
    duplicates_per_object: float  # boxes of an object's class centred on it, past the first
    peak_in_box: float  # heatmap maximum inside a box of its class, objects >= PEAK_MIN_SIDE px
    seconds_per_image: float
    false_positives: dict[str, int] = field(default_factory=dict)  # at IoU 0.5, by kind (``FALSE_POSITIVE_KINDS``)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def false_positive_row(self, model: str, image_set: str) -> str:
        """One line under ``FALSE_POSITIVE_COLUMNS``: how many false positives, and each kind's share."""
        total = sum(self.false_positives.values())
        shares = " ".join(f"{self.false_positives.get(kind, 0) / max(total, 1):>10.0%}"
                          for kind in FALSE_POSITIVE_KINDS)
        return f"{model[-22:]:<22} {image_set[:7]:<7} {self.method:<15} {total:>6} {shares}"

    def row(self, model: str, image_set: str) -> str:
        """One line of the table under ``COLUMNS``."""
        return (f"{model[-22:]:<22} {image_set[:7]:<7} {self.method:<15} {self.map50:>7.3f} {self.map50_95:>10.3f} "
                f"{self.recall50:>9.3f} {self.absent_prompt_fp_rate:>17.4f} {self.absent_scene_fp_rate:>18.3f} "
                f"{self.duplicates_per_object:>10.3f} {self.peak_in_box:>11.3f} {self.seconds_per_image:>8.2f}")


@dataclass
class QualityMeter:
    """Collects one image at a time (``add``) and reports a ``Quality`` (``result``). Prompt ``i``
    of every image is class ``i`` of the ground truth's ``class_id``."""

    method: str
    predictions: list[sv.Detections] = field(default_factory=list)
    targets: list[sv.Detections] = field(default_factory=list)
    seconds: float = 0.0
    objects: int = 0
    matched: int = 0
    absent_images: int = 0
    absent_pairs: int = 0
    absent_hits: int = 0
    duplicates: int = 0
    big: int = 0
    peaks: int = 0
    false_positives: Counter = field(default_factory=Counter)

    def add(self, results: list[Localization], truth: sv.Detections, image_wh: tuple[int, int], seconds: float) -> None:
        """One image's results (one per class, in class order), its ground truth in image px and
        the seconds ``localize`` took."""
        dets = sv.Detections.merge([r.detections for r in results])
        self.predictions.append(dets)
        self.targets.append(truth)
        self.seconds += seconds
        present = set(truth.class_id.tolist())
        hits = [len(r.detections) > 0 for i, r in enumerate(results) if i not in present]
        self.absent_images += any(hits)
        self.absent_pairs += len(hits)
        self.absent_hits += sum(hits)
        self.duplicates += duplicate_boxes(dets, truth)
        self.false_positives.update(false_positive_kinds(dets, truth))
        for box, cls in zip(truth.xyxy, truth.class_id):
            self.objects += 1
            same = dets[dets.class_id == cls]
            self.matched += bool(len(same)) and sv.box_iou_batch(box[None], same.xyxy).max() >= 0.5
            if min(box[2] - box[0], box[3] - box[1]) >= PEAK_MIN_SIDE:
                self.big += 1
                self.peaks += peak_in_boxes(results[cls].heatmap, truth.xyxy[truth.class_id == cls], image_wh)

    def result(self) -> Quality:
        images = len(self.predictions)
        maps = MeanAveragePrecision().update(self.predictions, self.targets).compute() if images else None
        return Quality(
            method=self.method,
            scenes=images,
            map50=float(maps.map50) if maps else 0.0,
            map50_95=float(maps.map50_95) if maps else 0.0,
            recall50=self.matched / max(self.objects, 1),
            absent_scene_fp_rate=self.absent_images / max(images, 1),
            absent_prompt_fp_rate=self.absent_hits / max(self.absent_pairs, 1),
            duplicates_per_object=self.duplicates / max(self.objects, 1),
            peak_in_box=self.peaks / max(self.big, 1),
            seconds_per_image=self.seconds / max(images, 1),
            false_positives=dict(self.false_positives),
        )


FALSE_POSITIVE_KINDS = ("loose", "partial", "wrong class", "background", "duplicate")
FALSE_POSITIVE_COLUMNS = (f"{'model':<22} {'set':<7} {'method':<15} {'FP@.5':>6} "
                          + " ".join(f"{kind:>10}" for kind in FALSE_POSITIVE_KINDS))
HOLDS, INSIDE = 0.9, 0.7  # a box holds an object: 90 % of its area; lies inside one: 70 % of the box's own


def false_positive_kinds(predictions: sv.Detections, truth: sv.Detections) -> Counter:
    """One image's false positives at IoU 0.5, by kind. Each class's boxes, best first, take the
    unmatched true object of their class they overlap most (IoU >= 0.5); the others are a
    ``duplicate`` (IoU >= 0.5 with an object already taken), ``loose`` (the box holds an object of
    its class), ``partial`` (it lies mostly inside one), ``wrong class`` (any of those with an
    object of another class) or ``background``."""
    kinds: Counter = Counter()
    taken = np.zeros(len(truth), bool)
    order = np.argsort(-(predictions.confidence if predictions.confidence is not None else np.zeros(len(predictions))))
    for i in order:
        box, cls = predictions.xyxy[i], predictions.class_id[i]
        iou, holds, inside = _relations(box, truth.xyxy)
        same, matches = truth.class_id == cls, iou >= 0.5
        free = same & ~taken & matches
        if free.any():
            taken[np.flatnonzero(free)[np.argmax(iou[free])]] = True
            continue
        if (same & matches).any():
            kinds["duplicate"] += 1
        elif (same & holds).any():
            kinds["loose"] += 1
        elif (same & inside).any():
            kinds["partial"] += 1
        elif (~same & (matches | holds | inside)).any():
            kinds["wrong class"] += 1
        else:
            kinds["background"] += 1
    return kinds


def _relations(box: np.ndarray, objects: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU of an xyxy box with each object, whether it holds each, whether it lies inside each."""
    wh = np.clip(np.minimum(box[2:], objects[:, 2:]) - np.maximum(box[:2], objects[:, :2]), 0, None)
    overlap = wh[:, 0] * wh[:, 1]
    box_area = max(float((box[2] - box[0]) * (box[3] - box[1])), 1e-9)
    areas = np.maximum((objects[:, 2] - objects[:, 0]) * (objects[:, 3] - objects[:, 1]), 1e-9)
    return overlap / (box_area + areas - overlap), overlap >= HOLDS * areas, overlap >= INSIDE * box_area


def duplicate_boxes(predictions: sv.Detections, truth: sv.Detections) -> int:
    """Boxes past the first that a class puts on one object of it: each predicted box belongs to
    the smallest true object of its class that holds its centre."""
    counts = np.zeros(len(truth), int)
    area = (truth.xyxy[:, 2] - truth.xyxy[:, 0]) * (truth.xyxy[:, 3] - truth.xyxy[:, 1])
    for box, cls in zip(predictions.xyxy, predictions.class_id):
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        holds = (truth.class_id == cls) & (truth.xyxy[:, 0] <= cx) & (cx <= truth.xyxy[:, 2])
        holds &= (truth.xyxy[:, 1] <= cy) & (cy <= truth.xyxy[:, 3])
        if holds.any():
            counts[np.flatnonzero(holds)[np.argmin(area[holds])]] += 1
    return int(np.maximum(counts - 1, 0).sum())


def peak_in_boxes(heatmap: np.ndarray, boxes: np.ndarray, image_wh: tuple[int, int]) -> bool:
    """Whether the heatmap's maximum lies inside any of the xyxy ``boxes`` (image px)."""
    y, x = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    px = (x + 0.5) * image_wh[0] / heatmap.shape[1]
    py = (y + 0.5) * image_wh[1] / heatmap.shape[0]
    return bool(np.any((boxes[:, 0] <= px) & (px <= boxes[:, 2]) & (boxes[:, 1] <= py) & (py <= boxes[:, 3])))
