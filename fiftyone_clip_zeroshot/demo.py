"""Offline demo: shapes-world scenes in a persistent FiftyOne dataset, detected with the shipped CLIP.

    python -m fiftyone_clip_zeroshot.demo [--samples 24] [--method sliding_window] [--launch]

Writes ``clip_detections`` (all prompts) and one ``clip_detections_heatmap_<prompt>`` per prompt,
evaluates against ``ground_truth`` with FiftyOne's COCO-style evaluation and prints the summary.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import fiftyone as fo

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset

DATASET = "clip-zeroshot-demo"
PROMPTS = ("red circle", "blue square", "yellow star", "green triangle", "purple cross", "orange circle")
DEMO_SEED = 11


def run(samples: int, method: str, images_dir: Path) -> fo.Dataset:
    start = time.perf_counter()
    dataset = load_shapes_dataset(DATASET, samples, images_dir, seed=DEMO_SEED, classes=PROMPTS, persistent=True)
    print(f"dataset {DATASET!r}: {len(dataset)} shapes-world scenes in {images_dir}")
    model = fz.load_model("shapes-world")
    fields = fz.detect(dataset, list(PROMPTS), method=method, model=model, label_field="clip_detections")
    elapsed = time.perf_counter() - start
    results = dataset.evaluate_detections(
        "clip_detections", gt_field="ground_truth", eval_key="eval", compute_mAP=True, progress=False
    )
    print(f"\nfields written: {', '.join(fields)}")
    print(f"method: {method}   model: shapes-world on {model.device}   total time: {elapsed:.1f}s")
    print(f"mAP@[.5:.95] (COCO): {results.mAP():.3f}")
    counts = dataset.count_values("clip_detections.detections.label")
    truth = dataset.count_values("ground_truth.detections.label")
    print("\nprompt            detections  ground truth")
    for prompt in PROMPTS:
        print(f"{prompt:<17} {counts.get(prompt, 0):>10}  {truth.get(prompt, 0):>12}")
    tp, fp, fn = dataset.sum("eval_tp"), dataset.sum("eval_fp"), dataset.sum("eval_fn")
    print(f"IoU 0.5: {tp} true positives, {fp} false positives, {fn} false negatives; "
          f"precision {tp / max(tp + fp, 1):.2f}, recall {tp / max(tp + fn, 1):.2f}")
    print(f"\nOpen it: python -c \"import fiftyone as fo; fo.launch_app(fo.load_dataset('{DATASET}')).wait()\"")
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--method", choices=("sliding_window", "occlusion"), default="sliding_window")
    parser.add_argument("--images-dir", type=Path, default=Path("demo-data"))
    parser.add_argument("--launch", action="store_true", help="open the FiftyOne App when done")
    args = parser.parse_args()
    dataset = run(args.samples, args.method, args.images_dir.resolve())
    if args.launch:
        fo.launch_app(dataset).wait()


if __name__ == "__main__":
    main()
