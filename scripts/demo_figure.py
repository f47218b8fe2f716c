"""Render docs/demo.png from the demo dataset: a scene with its boxes beside one prompt's heatmap.

    python scripts/demo_figure.py   # after scripts/demo.sh
"""

from pathlib import Path

import fiftyone as fo
import numpy as np
from PIL import Image, ImageDraw

from fiftyone_clip_zeroshot.demo import DATASET
from fiftyone_clip_zeroshot.labeling.runs.labels import pixel_xyxy

OUT = Path(__file__).resolve().parents[1] / "docs" / "demo.png"


def heatmap_display(label: fo.Heatmap) -> np.ndarray:
    """The heatmap as the App colours it: its values over its range, 1 = full colour."""
    values = label.map if label.map is not None else np.asarray(Image.open(label.map_path))
    return np.clip(values.astype(np.float32) / label.range[1], 0, 1)


def main() -> None:
    dataset = fo.load_dataset(DATASET)
    sample = max(dataset, key=lambda s: len(s.clip_detections.detections) if s.clip_detections else 0)
    image = Image.open(sample.filepath).convert("RGB")
    width, height = image.size
    boxes = image.copy()
    draw = ImageDraw.Draw(boxes)
    dets = sample.clip_detections.detections
    for det, box in zip(dets, pixel_xyxy(dets, (width, height)).tolist()):
        draw.rectangle(box, outline=(255, 255, 255), width=3)
        draw.text((box[0] + 4, box[1] + 2), f"{det.label} {det.confidence:.2f}", fill=(255, 255, 255))
    prompt = sample.clip_detections.detections[0].label
    field = next(f for f in dataset.get_field_schema() if f.startswith("clip_detections_heatmap_") and
                 f.endswith(prompt.replace(" ", "_")))
    heat = heatmap_display(sample[field])
    heat_img = Image.fromarray((heat * 255).astype(np.uint8)).resize((width, height), Image.BILINEAR)
    red = Image.merge("RGB", (heat_img, Image.new("L", heat_img.size, 0), Image.new("L", heat_img.size, 0)))
    overlay = Image.blend(image, red, 0.6)
    ImageDraw.Draw(overlay).text((8, 8), f"heatmap: {prompt}", fill=(255, 255, 255))
    canvas = Image.new("RGB", (2 * width + 10, height), (255, 255, 255))
    canvas.paste(boxes, (0, 0))
    canvas.paste(overlay, (width + 10, 0))
    OUT.parent.mkdir(exist_ok=True)
    canvas.save(OUT)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
