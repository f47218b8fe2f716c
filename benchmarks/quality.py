"""Localization quality on held-out shapes-world scenes, per method; prints one table.

    python benchmarks/quality.py [--scenes 100] [--model shapes-world] [--device cpu]

Every colour×shape class is prompted on every scene, so prompts of absent classes are measured
too. Columns: mAP@0.5 and mAP@[.5:.95] (supervision's COCO-style mAP), recall at IoU 0.5,
absent-prompt false positives (scenes with any box for an absent class / absent prompt pairs
with a box), how often a heatmap's peak is inside its object (objects >= 64 px), seconds/image.
"""

from __future__ import annotations

import argparse

import torch

from fiftyone_clip_zeroshot import load_model
from fiftyone_clip_zeroshot.shapes.evaluate import HELD_OUT_SCENE_SEED, evaluate, zero_shot_accuracy
from fiftyone_clip_zeroshot.shapes.world import render_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--model", default="shapes-world")
    parser.add_argument("--device", default=None)
    parser.add_argument("--methods", nargs="+", default=["sliding_window", "occlusion"])
    args = parser.parse_args()

    model = load_model(args.model, device=args.device)
    scenes = [render_scene(HELD_OUT_SCENE_SEED, i, 512, 384) for i in range(args.scenes)]
    print(f"model {args.model} on {model.device}, torch {torch.__version__}, {args.scenes} scenes of 512x384")
    print(f"zero-shot accuracy, 600 held-out crops, 30 classes: {zero_shot_accuracy(model, 600):.3f}\n")
    header = f"{'method':<15} {'mAP@.5':>7} {'mAP@.5:.95':>10} {'recall@.5':>9} {'absent FP (scenes)':>18} " \
             f"{'absent FP (prompts)':>19} {'peak in box':>11} {'s/image':>8}"
    print(header)
    print("-" * len(header))
    for method in args.methods:
        q = evaluate(model, scenes, method)
        print(f"{method:<15} {q.map50:>7.3f} {q.map50_95:>10.3f} {q.recall50:>9.3f} {q.absent_scene_fp_rate:>18.3f} "
              f"{q.absent_prompt_fp_rate:>19.4f} {q.peak_in_box:>11.3f} {q.seconds_per_image:>8.2f}")


if __name__ == "__main__":
    main()
