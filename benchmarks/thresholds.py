"""Where a family's default ``confidence_thresh`` comes from: quality at several thresholds.

    python benchmarks/thresholds.py --models shapes-siglip --scenes 10 --bias-shift 0 -2 2   # docs/quality.md
    python benchmarks/thresholds.py --models shapes-world --thresholds 0.4 0.5 0.6 0.7 --sets easy
    python benchmarks/thresholds.py --models shapes-siglip --scenes 10 --rule softmax --thresholds 0.2 0.3 0.5 0.7 0.9

One row per (model, rule, bias shift, scene set, method, threshold) on the held-out scenes of
``benchmarks/quality.py``, then per method the threshold it would choose: the best mean mAP@.5
over the sets among those whose absent-prompt boxes stay at or under 2 % of (scene, prompt)
pairs on every set (the test floors' ceiling). Every run of one model reads its crops from one
embedding store (``--cache``), so only the first threshold pays for the encoder.

``--rule`` scores a sigmoid family by another rule than its own (``RULES``); ``--bias-shift``
adds to the model's learnt bias, a stand-in for another checkpoint of the family; ``--alone``
prompts each class in a run of its own, as a user who types one prompt does.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
from collections import defaultdict
from collections.abc import Callable

import torch

from fiftyone_clip_zeroshot import load_model
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.core.models.families import Family
from fiftyone_clip_zeroshot.core.models.model import ClipModel
from fiftyone_clip_zeroshot.core.quality import COLUMNS
from fiftyone_clip_zeroshot.shapes.evaluate import SCENE_SETS, evaluate, held_out_scenes, with_bias_shift

ABSENT_CEILING = 0.02
Rule = Callable[[torch.Tensor, int, int], torch.Tensor]  # (logits of prompts then negatives, prompts, dim)


def _own_sigmoid(logits: torch.Tensor, count: int, dim: int) -> torch.Tensor:
    """Each prompt's own sigmoid, the model's probability as it was trained."""
    return torch.sigmoid(logits.narrow(dim, 0, count))


def _against_background(logits: torch.Tensor, count: int, dim: int) -> torch.Tensor:
    """Each prompt's logit read against the best negative's: the learnt bias cancels."""
    negatives = logits.narrow(dim, count, logits.shape[dim] - count).amax(dim, keepdim=True)
    return torch.sigmoid(logits.narrow(dim, 0, count) - negatives)


def _competition(logits: torch.Tensor, count: int, dim: int) -> torch.Tensor:
    """A prompt keeps its sigmoid only where no other text matches better."""
    own = logits.narrow(dim, 0, count)
    others = []
    for i in range(count):  # the best other text of each prompt
        rest = torch.cat([logits.narrow(dim, 0, i), logits.narrow(dim, i + 1, logits.shape[dim] - i - 1)], dim)
        others.append(rest.amax(dim, keepdim=True))
    return torch.sigmoid(own) * torch.exp(own - torch.cat(others, dim)).clamp(max=1)


def _softmax_over_prompts(logits: torch.Tensor, count: int, dim: int) -> torch.Tensor:
    """A softmax over the prompts alone, as FiftyOne's zoo wrapper scores a SigLIP."""
    return torch.softmax(logits.narrow(dim, 0, count), dim=dim)


RULES: dict[str, Rule] = {"sigmoid": _own_sigmoid, "background": _against_background,
                          "competition": _competition, "softmax": _softmax_over_prompts}


@dataclasses.dataclass(frozen=True)
class RuledFamily(Family):
    """A family whose prompts are scored by ``rule`` instead of its own."""

    rule: Rule = _own_sigmoid

    def probabilities(self, logits: torch.Tensor, count: int, dim: int = -1) -> torch.Tensor:
        return self.rule(logits, count, dim % logits.dim())


def variant(model: ClipModel, rule: str | None, bias_shift: float) -> ClipModel:
    """``model`` scored by ``rule`` (None: its family's own), its bias moved by ``bias_shift``."""
    if bias_shift:
        model = with_bias_shift(model, bias_shift)
    if rule is None:
        return model
    own = {f.name: getattr(model.family, f.name) for f in dataclasses.fields(Family)}
    return dataclasses.replace(model, family=RuledFamily(**own, rule=RULES[rule]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["shapes-siglip"])
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.05, 0.1, 0.2, 0.3, 0.5, 0.7])
    parser.add_argument("--scenes", type=int, default=12)
    parser.add_argument("--sets", nargs="+", default=["easy", "photo"], choices=list(SCENE_SETS))
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--rule", choices=list(RULES), default=None, help="default: the family's own")
    parser.add_argument("--bias-shift", nargs="+", type=float, default=[0.0], help="added to a sigmoid model's bias")
    parser.add_argument("--cache", default=None, help="embedding store folder (default: a temporary one)")
    parser.add_argument("--alone", action="store_true", help="one run per prompt, as a user types one")
    args = parser.parse_args()

    cache = args.cache or tempfile.mkdtemp(prefix="thresholds-store-")
    scenes = {name: held_out_scenes(args.scenes, name) for name in args.sets}
    print(f"{args.scenes} scenes per set; the threshold after the model\n{COLUMNS}\n{'-' * len(COLUMNS)}")
    for name in args.models:
        loaded = load_model(name, device="cpu")
        for shift in args.bias_shift:
            model = variant(loaded, args.rule, shift)
            label = (f"{name}{f' {args.rule}' if args.rule else ''}{' alone' if args.alone else ''}"
                     f"{f' b{shift:+g}' if shift else ''}")
            results: dict[tuple[str, float], list] = defaultdict(list)
            for method in args.methods:
                for thresh in args.thresholds:
                    for scene_set in args.sets:
                        quality = evaluate(model, scenes[scene_set], method, alone=args.alone,
                                           confidence_thresh=thresh, cache=cache)
                        results[method, thresh].append(quality)
                        print(quality.row(f"{label} @{thresh:g}", scene_set), flush=True)
            for method in args.methods:
                report_choice(label, method, args.thresholds, args.sets, results)


def report_choice(label: str, method: str, thresholds: list[float], sets: list[str],
                  results: dict[tuple[str, float], list]) -> None:
    """Print the threshold a method would choose: the best mean mAP@.5 within the absent ceiling."""
    allowed = [t for t in thresholds if all(q.absent_prompt_fp_rate <= ABSENT_CEILING for q in results[method, t])]
    best_any = max(thresholds, key=lambda t: sum(q.map50 for q in results[method, t]))
    mean_any = sum(q.map50 for q in results[method, best_any]) / len(sets)
    if not allowed:
        print(f"{label} {method}: no threshold keeps absent-prompt boxes at or under {ABSENT_CEILING:.0%} "
              f"(best mAP@.5 {mean_any:.3f} at {best_any:g})")
        return
    best = max(allowed, key=lambda t: sum(q.map50 for q in results[method, t]))
    mean = sum(q.map50 for q in results[method, best]) / len(sets)
    print(f"{label} {method}: choose {best:g} (mean mAP@.5 {mean:.3f} over {', '.join(sets)}; "
          f"best at any absent rate {mean_any:.3f} at {best_any:g})")


if __name__ == "__main__":
    main()
