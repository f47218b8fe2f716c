"""Core results → FiftyOne labels: one ``fo.Detections`` for all prompts, one ``fo.Heatmap`` per prompt,
and optionally the candidate boxes."""

from __future__ import annotations

import re
from pathlib import Path

import fiftyone as fo
import numpy as np
from PIL import Image

from fiftyone_clip_zeroshot.core.localize import Localization

INLINE_HEATMAP_CELLS = 64 * 64  # larger maps are written as PNGs next to the dataset
PNG_LEVEL = 1  # zlib's fastest: a quarter of the default's time for 15 % more bytes (a 256x192 map: 26 KB)
CANDIDATE_LABEL = "candidate"


def relative_xywh(xyxy: np.ndarray, image_wh: tuple[int, int]) -> list[list[float]]:
    """Image-px ``(N, 4)`` xyxy boxes → FiftyOne's relative ``[x, y, w, h]`` bounding boxes."""
    xyxy = np.asarray(xyxy, np.float64).reshape(-1, 4) / np.array([*image_wh, *image_wh])
    return np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], 1).tolist()


def pixel_xyxy(detections: list[fo.Detection], image_wh: tuple[int, int]) -> np.ndarray:
    """FiftyOne detections' relative ``[x, y, w, h]`` → image-px ``(N, 4)`` xyxy boxes."""
    xywh = np.array([d.bounding_box for d in detections], np.float64).reshape(-1, 4)
    return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1) * np.array([*image_wh, *image_wh])


def to_detections(results: list[Localization], image_wh: tuple[int, int], method: str) -> fo.Detections:
    """All prompts' boxes in one ``fo.Detections``: label = prompt, relative xywh, ``method`` attribute."""
    detections = [
        fo.Detection(label=result.prompt, bounding_box=box, confidence=float(confidence), method=method)
        for result in results
        for box, confidence in zip(relative_xywh(result.detections.xyxy, image_wh), result.detections.confidence)
    ]
    return fo.Detections(detections=detections)


def to_candidates(xyxy: np.ndarray, image_wh: tuple[int, int], confidence: np.ndarray | None = None
                  ) -> fo.Detections:
    """Class-agnostic candidate boxes as ``fo.Detections`` labelled ``candidate``, in the order given,
    with ``confidence`` (per box) when given."""
    boxes = relative_xywh(np.asarray(xyxy).reshape(-1, 4), image_wh)
    scores = [None] * len(boxes) if confidence is None else [float(c) for c in confidence]
    return fo.Detections(detections=[fo.Detection(label=CANDIDATE_LABEL, bounding_box=box, confidence=score)
                                     for box, score in zip(boxes, scores)])


def to_heatmap(heatmap: np.ndarray, png_path: Path | None = None, full_at: float = 1.0) -> fo.Heatmap:
    """A heatmap of probabilities with a fixed display scale: the App shows ``full_at`` and above
    (the run's confidence threshold) in full colour, so maps are visible, and the same value looks
    the same on every image. Inline float maps hold the probability (range ``[0, full_at]``); PNG
    maps hold ``round(255 * probability)`` (range ``[0, 255 * full_at]``; the App reads PNGs as 8-bit).
    """
    if png_path is None or heatmap.size <= INLINE_HEATMAP_CELLS:
        return fo.Heatmap(map=heatmap.astype(np.float32), range=[0.0, float(full_at)])
    png_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(heatmap, 0, 1) * 255).astype(np.uint8)).save(png_path, compress_level=PNG_LEVEL)
    return fo.Heatmap(map_path=str(png_path), range=[0, round(255 * full_at)])


def slug(text: str) -> str:
    """A field-name-safe version of a prompt: lowercase letters, digits and underscores."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:40] or "prompt"


def heatmap_fields(label_field: str, prompts: list[str]) -> list[str]:
    """One heatmap field per prompt, ``<label_field>_heatmap_<slug>``, unique even when slugs collide."""
    names: list[str] = []
    for prompt in prompts:
        name = base = f"{label_field}_heatmap_{slug(prompt)}"
        suffix = 2
        while name in names:
            name, suffix = f"{base}_{suffix}", suffix + 1
        names.append(name)
    return names
