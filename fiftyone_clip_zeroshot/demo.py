"""Offline demo: shapes-world scenes in a persistent FiftyOne dataset, detected with the shipped CLIP.

    python -m fiftyone_clip_zeroshot.demo [--samples 24] [--method sliding_window] [--launch]
    python -m fiftyone_clip_zeroshot.demo --open     # the App on the demo dataset, without running again

It first links this repository into FiftyOne's plugins dir (``plugin.install``), so the App and
``fiftyone operators list`` show the plugin. Then the whole review loop: detect
(``clip_detections`` for all prompts and one ``clip_detections_heatmap_<prompt>`` per prompt) →
verify each box with CLIP → evaluate against ``ground_truth`` (FiftyOne's COCO-style evaluation) →
tag doubtful labels ``needs_review`` → count the review patches. Prints the report. It also
registers the repository's zoo source, which ``fz.index_objects`` needs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import fiftyone as fo

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.labeling.runs.detect import default_heatmap_root
from fiftyone_clip_zeroshot.plugin.install import PluginInstallError, install_plugin, install_zoo_source
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset

DATASET = "clip-zeroshot-demo"
PROMPTS = ("red circle", "blue square", "yellow star", "green triangle", "purple cross", "orange circle")
DEMO_SEED = 11


def run(samples: int, method: str, images_dir: Path) -> fo.Dataset:
    start = time.perf_counter()
    dataset = load_shapes_dataset(DATASET, samples, images_dir, seed=DEMO_SEED, classes=PROMPTS, persistent=True)
    print(f"dataset {DATASET!r}: {len(dataset)} shapes-world scenes in {images_dir}")
    print(f"FiftyOne database: {fo.config.database_dir}; heatmap PNGs: {default_heatmap_root()}")
    model = fz.load_model("shapes-world")
    fields = fz.detect(dataset, list(PROMPTS), method=method, model=model, label_field="clip_detections")
    elapsed = time.perf_counter() - start
    print(f"\nfields written: {', '.join(fields)}")
    print(f"method: {method}   model: shapes-world on {model.device}   detection time: {elapsed:.1f}s\n")
    mismatches = fz.verify(dataset, "clip_detections", model=model, progress=False)
    report = fz.evaluate(dataset, "clip_detections", gt_field="ground_truth", eval_key="eval")
    print(report)
    tagged = fz.tag_for_review(dataset, "clip_detections", confidence_below=0.7, eval_key="eval",
                               gt_field="ground_truth")
    patches = fz.review_view(dataset, "clip_detections", eval_key="eval")
    print(f"\nverify: CLIP disagrees with {mismatches} boxes (tagged 'clip:mismatch')")
    print(f"review: {tagged} labels tagged 'needs_review' (confidence < 0.7, mismatches, false positives, "
          f"missed ground truth); {len(patches)} evaluation patches to review (FP + FN)")
    print("\nOpen it in the App, with the CLIP zero-shot panel: bash scripts/demo.sh --open")
    print("Review view in Python: fz.review_view(dataset, 'clip_detections', eval_key='eval')")
    return dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--method", choices=METHODS, default=METHODS[0])
    parser.add_argument("--images-dir", type=Path, default=Path("demo-data"))
    parser.add_argument("--launch", action="store_true", help="open the FiftyOne App when done")
    parser.add_argument("--open", action="store_true", help="only open the App on the demo dataset made before")
    args = parser.parse_args()
    try:
        print(f"plugin: linked into FiftyOne's plugins dir as {install_plugin()}")
        print(f"zoo source: {install_zoo_source()}")
    except PluginInstallError as error:
        print(f"plugin: not linked ({error})")
    if args.open and not fo.dataset_exists(DATASET):
        parser.exit(1, f"no {DATASET!r} dataset yet: run the demo once without --open\n")
    dataset = fo.load_dataset(DATASET) if args.open else run(args.samples, args.method, args.images_dir.resolve())
    if args.launch or args.open:
        session = fo.launch_app(dataset)
        fz.open_panel(session)
        print("The App is open beside the CLIP zero-shot panel; close its browser tab (or press Ctrl-C) to end.")
        session.wait()


if __name__ == "__main__":
    main()
