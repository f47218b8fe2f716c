"""Where a family's default ``confidence_thresh`` comes from: quality at several thresholds.

    python benchmarks/thresholds.py --models shapes-siglip --thresholds 0.02 0.05 0.1 0.2 0.3
    python benchmarks/thresholds.py --models shapes-world --thresholds 0.4 0.5 0.6 0.7 --sets easy
    python benchmarks/thresholds.py --models shapes-siglip --competition   # the rule not chosen

One row per (model, scene set, method, threshold) on the held-out scenes of
``benchmarks/quality.py``, then per method the threshold it would choose: the best mean mAP@.5
over the sets among those whose absent-prompt boxes stay at or under 2 % of (scene, prompt)
pairs on every set (the test floors' ceiling). ``--competition`` scores the sigmoid families by
the rule not chosen: a prompt keeps its probability only where no other text (prompt or negative)
matches better, ``sigmoid(l) * min(1, exp(l - best other l))``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import defaultdict

import torch

from fiftyone_clip_zeroshot import load_model
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.core.models.families import Family
from fiftyone_clip_zeroshot.core.quality import COLUMNS
from fiftyone_clip_zeroshot.shapes.evaluate import SCENE_SETS, evaluate, held_out_scenes

ABSENT_CEILING = 0.02


@dataclasses.dataclass(frozen=True)
class CompetingSigmoid(Family):
    """A sigmoid family whose prompts also lose to any text that matches better (``--competition``)."""

    def probabilities(self, logits: torch.Tensor, count: int, dim: int = -1) -> torch.Tensor:
        own = logits.narrow(dim, 0, count)
        others = []
        for i in range(count):  # the best other text of each prompt
            rest = torch.cat([logits.narrow(dim, 0, i), logits.narrow(dim, i + 1, logits.shape[dim] - i - 1)], dim)
            others.append(rest.amax(dim, keepdim=True))
        best_other = torch.cat(others, dim)
        return torch.sigmoid(own) * torch.exp(own - best_other).clamp(max=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["shapes-siglip"])
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.02, 0.05, 0.1, 0.2, 0.3])
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--sets", nargs="+", default=["easy", "photo"], choices=list(SCENE_SETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--competition", action="store_true", help="sigmoid families: the competing rule")
    args = parser.parse_args()

    scenes = {name: held_out_scenes(args.scenes, name) for name in args.sets}
    print(f"{args.scenes} scenes per set; the threshold after the model\n{COLUMNS}\n{'-' * len(COLUMNS)}")
    for name in args.models:
        model = load_model(name, device="cpu")
        if args.competition and model.family.sigmoid:
            model = dataclasses.replace(model, family=CompetingSigmoid(**{
                f.name: getattr(model.family, f.name) for f in dataclasses.fields(Family)}))
        results: dict[tuple[str, float], list] = defaultdict(list)
        for method in args.methods:
            for thresh in args.thresholds:
                for scene_set in args.sets:
                    quality = evaluate(model, scenes[scene_set], method, confidence_thresh=thresh)
                    results[method, thresh].append(quality)
                    print(quality.row(f"{name} @{thresh:g}", scene_set), flush=True)
        for method in args.methods:
            allowed = [t for t in args.thresholds
                       if all(q.absent_prompt_fp_rate <= ABSENT_CEILING for q in results[method, t])]
            if not allowed:
                print(f"{name} {method}: no threshold keeps absent-prompt boxes at or under {ABSENT_CEILING:.0%}")
                continue
            best = max(allowed, key=lambda t: sum(q.map50 for q in results[method, t]))
            mean = sum(q.map50 for q in results[method, best]) / len(args.sets)
            print(f"{name} {method}: choose {best:g} (mean mAP@.5 {mean:.3f} over {', '.join(args.sets)})")


if __name__ == "__main__":
    main()
