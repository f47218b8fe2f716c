"""Core results → FiftyOne labels: one ``fo.Detections`` for all prompts, one ``fo.Heatmap`` per prompt."""

from __future__ import annotations

import re
from pathlib import Path

import fiftyone as fo
import numpy as np
from PIL import Image

from fiftyone_clip_zeroshot.core.localize import Localization

INLINE_HEATMAP_CELLS = 64 * 64  # larger maps are written as PNGs next to the dataset


def to_detections(results: list[Localization], image_wh: tuple[int, int], method: str) -> fo.Detections:
    """All prompts' boxes in one ``fo.Detections``: label = prompt, relative xywh, ``method`` attribute."""
    width, height = image_wh
    detections = []
    for result in results:
        dets = result.detections
        for (x1, y1, x2, y2), confidence in zip(dets.xyxy, dets.confidence):
            detections.append(
                fo.Detection(
                    label=result.prompt,
                    bounding_box=[x1 / width, y1 / height, (x2 - x1) / width, (y2 - y1) / height],
                    confidence=float(confidence),
                    method=method,
                )
            )
    return fo.Detections(detections=detections)


def to_heatmap(heatmap: np.ndarray, png_path: Path | None = None) -> fo.Heatmap:
    """A heatmap with a fixed scale: inline float maps use range [0, 1]; PNG maps store
    ``round(255 * value)`` and use range [0, 255] (the App reads PNGs as 8-bit)."""
    if png_path is None or heatmap.size <= INLINE_HEATMAP_CELLS:
        return fo.Heatmap(map=heatmap.astype(np.float32), range=[0.0, 1.0])
    png_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(heatmap, 0, 1) * 255).astype(np.uint8)).save(png_path)
    return fo.Heatmap(map_path=str(png_path), range=[0, 255])


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
