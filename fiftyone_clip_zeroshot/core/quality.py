"""Localization quality, image by image: the figures ``benchmarks/quality.py`` and
``benchmarks/real_clip.py`` print, whatever the images and the model."""

from __future__ import annotations

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

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

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
        )


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
