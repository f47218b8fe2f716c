"""Localization quality of any CLIP checkpoint on real photos: a COCO-2017 validation subset.

    python benchmarks/real_clip.py --model openai/clip-vit-base-patch32 --max-samples 50
    python benchmarks/real_clip.py --model shapes-world --dataset shapes --max-samples 20   # offline

COCO is loaded with ``fiftyone.zoo`` (downloaded once, then cached in ``fo.config.dataset_zoo_dir``)
and every category present in the loaded samples is a prompt (``--template``, default "a photo of a
{}"). Prints the table of ``benchmarks/quality.py`` (mAP@0.5, mAP@[.5:.95], recall, absent-prompt
false positives, heatmap peak in box, s/image) per method, stores the boxes in ``clip_<method>``
with the class names as labels, and runs FiftyOne's ``evaluate_detections`` under the same key, so
the results open in the App. ``--dataset shapes`` runs the same path on generated shapes-world
scenes. Without internet, missing data or weights stop it with a message saying what to fetch.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import fiftyone as fo
import numpy as np
import supervision as sv
import torch

from fiftyone_clip_zeroshot import ClipZeroShotError, EvaluationReport, evaluate, load_model, localize
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.core.models.model import ClipModel
from fiftyone_clip_zeroshot.core.quality import COLUMNS, Quality, QualityMeter
from fiftyone_clip_zeroshot.labeling.runs.labels import pixel_xyxy, to_detections
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset


class DataUnavailable(ClipZeroShotError):
    """The evaluation images could not be loaded (offline, or not in FiftyOne's zoo cache)."""


def load_coco(max_samples: int) -> fo.Dataset:
    """The first ``max_samples`` images of COCO-2017 validation with their detections, via ``fiftyone.zoo``."""
    import fiftyone.zoo as foz

    name = f"clip-zeroshot-coco-2017-validation-{max_samples}"
    if fo.dataset_exists(name):
        return fo.load_dataset(name)
    try:
        dataset = foz.load_zoo_dataset("coco-2017", split="validation", label_types=["detections"],
                                       max_samples=max_samples, dataset_name=name)
    except Exception as error:  # the zoo raises requests/OSError/… errors of many kinds when offline
        raise DataUnavailable(
            f"COCO-2017 validation could not be loaded through fiftyone.zoo ({type(error).__name__}: {error}). "
            f"It is downloaded once and then cached in {fo.config.dataset_zoo_dir}: run this where the internet "
            f"is reachable, or try it offline with --dataset shapes."
        ) from error
    dataset.persistent = True
    return dataset


def load_shapes(max_samples: int) -> fo.Dataset:
    """Generated shapes-world scenes (the offline stand-in for COCO) with their ``ground_truth``."""
    name = f"clip-zeroshot-shapes-{max_samples}"
    images = Path(fo.config.default_dataset_dir) / name
    return load_shapes_dataset(name, max_samples, images, seed=7, persistent=True)


def ground_truth(detections: fo.Detections | None, image_wh: tuple[int, int], classes: list[str]) -> sv.Detections:
    """FiftyOne's relative xywh boxes → image-px xyxy with ``class_id`` = index in ``classes``."""
    objects = detections.detections if detections else []
    class_id = np.array([classes.index(d.label) for d in objects], int)
    return sv.Detections(xyxy=pixel_xyxy(objects, image_wh), class_id=class_id)


def evaluate_method(
    dataset: fo.Dataset, model: ClipModel, method: str, classes: list[str], template: str,
    gt_field: str = "ground_truth", progress: bool = True,
) -> tuple[Quality, EvaluationReport]:
    """Localize every class in every sample, measure it, store the boxes in ``clip_<method>`` (all
    samples at once, after the last one succeeded) and evaluate them with FiftyOne under that key."""
    prompts = [template.format(c) for c in classes]
    meter = QualityMeter(method)
    labels = {}
    for sample in dataset.iter_samples(progress=progress):
        image_wh = (sample.metadata.width, sample.metadata.height)
        start = time.perf_counter()
        results = localize(sample.filepath, prompts, model, method=method)
        meter.add(results, ground_truth(sample[gt_field], image_wh, classes), image_wh, time.perf_counter() - start)
        labels[sample.id] = to_detections([replace(r, prompt=c) for r, c in zip(results, classes)], image_wh, method)
    field = f"clip_{method}"
    if field in dataset.list_evaluations():
        dataset.delete_evaluation(field)
    dataset.set_values(field, labels, key_field="id")
    return meter.result(), evaluate(dataset, field, gt_field, eval_key=field)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="openai/clip-vit-base-patch32", help="hub id, folder or packaged name")
    parser.add_argument("--dataset", choices=["coco", "shapes"], default="coco")
    parser.add_argument("--max-samples", type=int, default=50)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--template", default="a photo of a {}", help="prompt for each class name")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    try:
        model = load_model(args.model, device=args.device)
        dataset = load_coco(args.max_samples) if args.dataset == "coco" else load_shapes(args.max_samples)
    except ClipZeroShotError as error:
        sys.exit(f"error: {error}")
    dataset.compute_metadata(progress=False)
    classes = sorted(dataset.distinct("ground_truth.detections.label"))
    print(f"{args.model} on {len(dataset)} images of {dataset.name!r}, {len(classes)} classes as prompts; "
          f"torch {torch.__version__}; {platform.machine()}, {model.device}")
    rows, reports = [], []
    for method in args.methods:
        quality, report = evaluate_method(dataset, model, method, classes, args.template)
        rows.append(quality.row(args.model, args.dataset))
        reports.append(str(report).splitlines()[0])
    print(COLUMNS, "-" * len(COLUMNS), *rows, "", "FiftyOne evaluate_detections (IoU 0.5 matches):", *reports, sep="\n")
    print(f"\nOpen them in the App: fo.launch_app(fo.load_dataset({dataset.name!r})), "
          f"then the Model Evaluation panel (keys {', '.join(f'clip_{m}' for m in args.methods)}).")


if __name__ == "__main__":
    main()
