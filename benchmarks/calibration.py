"""Do thresholds learnt from a review hold on new images? One row per (model, seed).

    python benchmarks/calibration.py                      # the panel, seeds 21 and 5
    python benchmarks/calibration.py --models shapes-world --seeds 21 --scenes 40

For each model: shapes-world scenes of six prompts, detected with ``proposals`` at threshold 0.3;
every label of the first half decided from the ground truth (``shapes.review``); ``calibrate`` at
the target precision; then, on the held-out half, the right labels and precision kept by the
per-prompt thresholds and by the one shared threshold chosen from the same decisions.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.core.models.model import PACKAGED_MODELS
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset
from fiftyone_clip_zeroshot.shapes.review import kept_right, review_from_ground_truth, verdicts_from_ground_truth

PROMPTS = ("red circle", "blue square", "yellow star", "green triangle", "purple cross", "orange circle")


def measure(model: str, seed: int, scenes: int, target: float, root: Path) -> str:
    dataset = load_shapes_dataset(f"calibration-{model}-{seed}", scenes, root / f"{model}-{seed}", seed=seed,
                                  classes=PROMPTS)
    try:
        fz.detect(dataset, list(PROMPTS), model=model, method="proposals", label_field="auto", confidence_thresh=0.3,
                  heatmaps=False, progress=False)
        verdicts = verdicts_from_ground_truth(dataset, "auto")
        ids = dataset.values("id")
        reviewed, held_out = dataset.select(ids[: scenes // 2]), dataset.select(ids[scenes // 2:])
        review_from_ground_truth(reviewed, "auto", verdicts)
        calibration = fz.calibrate(reviewed, "auto", precision=target)
        own = kept_right(held_out, "auto", verdicts, calibration)
        shared = kept_right(held_out, "auto", verdicts, {p: calibration.shared for p in PROMPTS})
        decisions = sum(item.decisions for item in calibration.details.values())
        pull = "alike" if math.isinf(calibration.prior) else f"{calibration.prior:.0f}"

        def cell(right_kept: tuple[int, int]) -> str:
            right, kept = right_kept
            return f"{right:>4}/{kept:<4} {right / kept if kept else 0:>5.3f}"

        return (f"{model:<22}{seed:>5}{decisions:>10}{pull:>7}{calibration.shared:>8.3f}   {cell(own):<16}"
                f"{cell(shared):<16}")
    finally:
        dataset.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(PACKAGED_MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[21, 5])
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--precision", type=float, default=0.9)
    args = parser.parse_args()
    print(f"{args.scenes} scenes per row (half reviewed, half held out), target precision {args.precision}")
    print(f"{'model':<22}{'seed':>5}{'decisions':>10}{'pull':>7}{'shared':>8}   {'per-prompt right/kept':<22}"
          f"{'shared right/kept'}")
    with tempfile.TemporaryDirectory() as root:
        for model in args.models:
            for seed in args.seeds:
                print(measure(model, seed, args.scenes, args.precision, Path(root)), flush=True)


if __name__ == "__main__":
    main()
