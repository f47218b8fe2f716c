"""Shapes-world scenes as a FiftyOne dataset with a ``ground_truth`` ``fo.Detections`` field."""

from __future__ import annotations

from pathlib import Path

import fiftyone as fo

from fiftyone_clip_zeroshot.labeling.runs.labels import relative_xywh
from fiftyone_clip_zeroshot.shapes.world import CLASSES, render_scene


def load_shapes_dataset(
    name: str,
    count: int,
    images_dir: str | Path,
    seed: int = 0,
    width: int = 640,
    height: int = 480,
    classes: tuple[str, ...] = CLASSES,
    persistent: bool = False,
    overwrite: bool = True,
) -> fo.Dataset:
    """Render ``count`` scenes as JPEGs into ``images_dir`` and load them with their ground truth."""
    images_dir = Path(images_dir)
    images_dir.mkdir(parents=True, exist_ok=True)
    if overwrite and fo.dataset_exists(name):
        fo.delete_dataset(name)
    dataset = fo.Dataset(name, persistent=persistent)
    samples = []
    for index in range(count):
        scene = render_scene(seed, index, width, height, classes=classes)
        path = images_dir / f"scene-{seed}-{index:05d}.jpg"
        scene.image.save(path, quality=95)
        detections = [
            fo.Detection(label=label, bounding_box=box)
            for label, box in zip(scene.labels, relative_xywh(scene.boxes, (width, height)))
        ]
        samples.append(fo.Sample(filepath=str(path), ground_truth=fo.Detections(detections=detections)))
    dataset.add_samples(samples, progress=False)
    dataset.compute_metadata(progress=False)
    return dataset
