"""Learn each prompt's confidence threshold from a person's review of the auto-labels.

CLIP's probabilities differ widely between prompts, so one threshold is too strict for some and
too loose for others. ``calibrate`` reads the decisions (``labeling.curation.decisions``) and returns, per
prompt, the lowest confidence at which its reviewed labels reach a target precision. A prompt with
few decisions borrows strength from all of them: its precision curve is pulled towards the curve
of every prompt's decisions together, as if it had ``prior`` more decisions that follow it. How
strong that pull is, is learnt from how much the prompts' precisions differ beyond what their
numbers of decisions explain (a beta-binomial estimate by moments): prompts that behave alike
share one threshold, prompts that clearly differ get their own. The thresholds are chosen
together, so that the labels they keep reach the target precision with as many right ones as
possible; the shared threshold is one of the choices, so on the reviewed labels per-prompt
thresholds never keep fewer right labels at the target than it does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import fiftyone as fo
import numpy as np

from fiftyone_clip_zeroshot.core.options import OptionsError
from fiftyone_clip_zeroshot.labeling.curation.decisions import reviewed_labels, run_thresholds
from fiftyone_clip_zeroshot.labeling.runs.jobs import LabelingError
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun


@dataclass
class PromptThreshold:
    """One prompt's calibrated threshold and the counts it rests on."""

    prompt: str
    threshold: float
    decisions: int  # the prompt's own reviewed labels (right or wrong)
    source: str  # "own" | "pulled towards the shared threshold" | "shared threshold" | "run's threshold"
    kept_right: int  # reviewed labels at/above the threshold that were right...
    kept: int  # ...of the reviewed labels at/above it
    right: int  # all reviewed labels of the prompt that were right

    @property
    def precision(self) -> float | None:
        """Estimated precision of the prompt's auto-labels at the threshold (None: no decisions there)."""
        return self.kept_right / self.kept if self.kept else None

    @property
    def recall(self) -> float | None:
        """Share of the prompt's right auto-labels that the threshold keeps."""
        return self.kept_right / self.right if self.right else None

    def interval(self) -> tuple[float, float] | None:
        """A 95 % Wilson interval around ``precision``: how far a few decisions can be trusted."""
        if not self.kept:
            return None
        z, n, p = 1.96, self.kept, self.kept_right / self.kept
        centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


class Calibration(dict):
    """Prompt → calibrated threshold (pass it as ``detect(confidence_thresh=...)``), with what each
    rests on in ``details`` and the threshold of all prompts' decisions together in ``shared``."""

    def __init__(self, target: float, shared: float | None, prior: float, details: list[PromptThreshold]):
        super().__init__({item.prompt: item.threshold for item in details})
        self.target, self.shared, self.prior = target, shared, prior
        self.details = {item.prompt: item for item in details}

    def __str__(self) -> str:
        shared = "none (no decisions)" if self.shared is None else f"{self.shared:.3f}"
        pull = "prompts alike: all pulled onto it" if math.isinf(self.prior) else f"{self.prior:.1f} decisions' worth"
        lines = [f"calibrated to precision {self.target:.2f}; shared threshold {shared}; its pull: {pull}",
                 f"{'prompt':<24}{'threshold':>10}{'decisions':>10}  {'precision (right/kept, 95 %)':<32}"
                 f"{'recall (kept/right)':<20}source"]
        for item in self.details.values():
            interval = item.interval()
            precision = ("–" if item.precision is None else
                         f"{item.precision:.2f} ({item.kept_right}/{item.kept}, {interval[0]:.2f}–{interval[1]:.2f})")
            recall = "–" if item.recall is None else f"{item.recall:.2f} ({item.kept_right}/{item.right})"
            lines.append(f"{item.prompt:<24}{item.threshold:>10.3f}{item.decisions:>10}  {precision:<32}{recall:<20}"
                         f"{item.source}")
        return "\n".join(lines)


def calibrate(
    samples: fo.core.collections.SampleCollection,
    label_field: str,
    precision: float = 0.9,
    prior: float | None = None,
    each_prompt: bool = False,
    save: bool = True,
) -> Calibration:
    """One threshold per prompt from the reviewed labels of ``label_field``, so that the labels kept
    reach ``precision`` while keeping as many right ones as the decisions allow.

    A label is right when accepted, wrong when rejected or relabeled to another class; undecided
    labels do not count. Each prompt's precision above a confidence is estimated from its own
    decisions plus ``prior`` decisions' worth of the precision of all prompts' decisions there
    (learnt from how much the prompts differ, unless given), so a prompt with few decisions lands
    near the shared threshold and one with many on its own. Each prompt's threshold is the lowest
    confidence where that estimate reaches one common level, the lowest level at which all the
    reviewed labels kept reach ``precision``: a prompt whose labels are clean goes lower than the
    shared threshold, a noisy one higher, and prompts that behave alike share it. With
    ``each_prompt`` the level is ``precision`` itself, so every prompt's estimate reaches the
    target (a stricter promise that keeps fewer labels).

    A prompt without decisions takes the shared threshold (the lowest at which all decisions
    together reach ``precision``); with no decisions at all, every prompt keeps its run's. Labels
    exist only at/above the run's threshold, so a calibrated one is never lower: run at a low
    threshold (e.g. 0.3) to leave room below.

    Args:
        samples: a dataset or view with reviewed labels.
        label_field: the reviewed ``fo.Detections`` field.
        precision: the target precision, in (0, 1].
        prior: how many decisions' worth the shared curve weighs in each prompt's estimate (0: each
            prompt on its own; None: learnt from how much the prompts differ).
        each_prompt: make every prompt's own estimated precision reach ``precision``.
        save: store the thresholds on the field's run record (``DetectRun.calibrated``), where the
            panel, ``review_report`` and later runs read them.
    """
    if not 0 < precision <= 1:
        raise OptionsError(f"precision must be in (0, 1], got {precision}")
    if prior is not None and prior < 0:
        raise OptionsError(f"prior must be >= 0 decisions, got {prior}")
    run = DetectRun.load(samples, label_field)
    labels = reviewed_labels(samples, label_field)
    prompts = list(dict.fromkeys([*(run.prompts if run else []), *(label.prompt for label in labels)]))
    fallback = run_thresholds(run, prompts, calibrated=False)
    decided = [label for label in labels if label.correct is not None]
    own = {p: _Curve([label.confidence for label in decided if label.prompt == p],
                     [bool(label.correct) for label in decided if label.prompt == p]) for p in prompts}
    pooled = _Curve([label.confidence for label in decided], [bool(label.correct) for label in decided])
    shared = pooled.lowest_reaching(precision, pooled.thresholds) if decided else None
    if prior is None:
        prior = prior_strength([list(curve.right) for curve in own.values()])
    if shared is None:
        thresholds = dict(fallback)
    else:
        shrunk = {p: curve.shrunk_towards(pooled, prior) for p, curve in own.items() if len(curve.right)}
        candidates = {p: sorted({*own[p].thresholds, shared}) for p in shrunk}

        def at_level(level: float) -> dict[str, float]:
            chosen = {p: shrunk[p].lowest_reaching(level, candidates[p]) for p in shrunk}
            return {p: max(chosen.get(p, shared), fallback[p]) for p in prompts}

        levels = [precision] if each_prompt else sorted(
            {value for p in shrunk for t in candidates[p] if (value := shrunk[p].precision(t)) is not None})
        thresholds = next((chosen for level in levels if _reaches(own, chosen := at_level(level), precision)),
                          at_level(1.0))
        everyone_shared = {p: max(shared, fallback[p]) for p in prompts}
        if not each_prompt and _kept(own, everyone_shared)[0] > _kept(own, thresholds)[0]:
            thresholds = everyone_shared  # never fewer right labels than one shared threshold keeps
    details = []
    for prompt in prompts:
        curve = own[prompt]
        decisions = len(curve.right)
        if shared is None:
            source = "run's threshold"
        elif not decisions:
            source = "shared threshold"
        elif math.isinf(prior):
            source = "pulled onto the shared curve (prompts alike)"
        else:
            source = "own" if decisions >= 2 * prior else "pulled towards the shared curve"
        details.append(PromptThreshold(prompt, thresholds[prompt], decisions, source, *curve.kept(thresholds[prompt]),
                                       int(curve.right.sum())))
    calibration = Calibration(precision, shared, prior, details)
    if save and run is not None:
        counts = {prompt: item.decisions for prompt, item in calibration.details.items()}
        run.update(samples, calibrated=dict(calibration),
                   calibration=dict(target=precision, prior=None if math.isinf(prior) else prior, shared=shared,
                                    each_prompt=each_prompt, decisions=counts))
    return calibration


def calibrated_thresholds(samples: fo.core.collections.SampleCollection, label_field: str,
                          prompts: Sequence[str]) -> dict[str, float]:
    """The thresholds calibrated on ``label_field`` for those of ``prompts`` it has, to pass as a
    run's ``confidence_thresh``; raises when the field was never calibrated."""
    run = DetectRun.load(samples, label_field)
    if run is None or not run.calibrated:
        raise LabelingError(f"{label_field!r} has no calibrated thresholds: review its labels, then fz.calibrate")
    return {prompt: value for prompt, value in run.calibrated.items() if prompt in prompts}


def _kept(curves: dict[str, _Curve], thresholds: dict[str, float]) -> tuple[int, int]:
    """(right, all) among the reviewed labels that ``thresholds`` keep."""
    counts = [curve.kept(thresholds[p]) for p, curve in curves.items()]
    return sum(right for right, _ in counts), sum(kept for _, kept in counts)


def _reaches(curves: dict[str, _Curve], thresholds: dict[str, float], precision: float) -> bool:
    right, kept = _kept(curves, thresholds)
    return kept > 0 and right / kept >= precision - 1e-12


def prior_strength(decisions: list[list[bool]]) -> float:
    """How many decisions' worth the shared precision should weigh against each prompt's own
    (``decisions``: each prompt's right/wrong), by the beta-binomial method of moments: the spread
    of the prompts' precisions beyond binomial noise. Infinite when they differ no more than noise."""
    counts = np.array([len(d) for d in decisions if d], float)
    right = np.array([sum(d) for d in decisions if d], float)
    if len(counts) < 2:
        return math.inf
    mean = right.sum() / counts.sum()
    if mean in (0.0, 1.0):
        return math.inf
    spread = np.sum(counts * (right / counts - mean) ** 2) / counts.sum()
    noise = mean * (1 - mean) * (len(counts) - 1) / counts.sum()
    if spread <= noise:
        return math.inf
    return max(mean * (1 - mean) / (spread - noise) - 1, 0.0)


class _Curve:
    """Reviewed labels of a prompt (or of all): confidences and whether each was right."""

    def __init__(self, confidences: Sequence[float], right: Sequence[bool]):
        self.confidences, self.right = np.asarray(confidences, float), np.asarray(right, bool)
        self.thresholds = sorted(set(self.confidences.tolist()))
        self._shrunk: tuple[_Curve, float] | None = None

    def kept(self, threshold: float) -> tuple[int, int]:
        """(right, all) among the labels at/above ``threshold``."""
        above = self.confidences >= threshold
        return int(self.right[above].sum()), int(above.sum())

    def precision(self, threshold: float) -> float | None:
        """Precision at/above ``threshold``: its own, or pulled towards the shared curve when shrunk."""
        right, kept = self.kept(threshold)
        if self._shrunk is None:
            return right / kept if kept else None
        pooled, prior = self._shrunk
        shared = pooled.precision(min(threshold, pooled.thresholds[-1]))
        if math.isinf(prior):
            return shared
        return (right + prior * shared) / (kept + prior) if kept + prior else None

    def shrunk_towards(self, pooled: _Curve, prior: float) -> _Curve:
        shrunk = _Curve(self.confidences, self.right)
        shrunk._shrunk = (pooled, prior)
        return shrunk

    def lowest_reaching(self, target: float, candidates: Sequence[float]) -> float:
        """The lowest candidate threshold whose precision reaches ``target``; 1.0 if none does."""
        for threshold in candidates:
            value = self.precision(threshold)
            if value is not None and value >= target - 1e-12:
                return float(threshold)
        return 1.0
