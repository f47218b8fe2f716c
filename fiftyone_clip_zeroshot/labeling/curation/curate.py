"""Curate auto-labels with CLIP: verify/relabel boxes, classify images, evaluate, tag for review.

The review loop: ``detect`` (or any detector) proposes boxes → ``verify`` has CLIP read every box
and tags disagreements → ``evaluate`` compares with ground truth → ``tag_for_review`` marks the
doubtful labels ``needs_review`` → ``review_view`` shows them as patches in the App.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import fiftyone as fo
import numpy as np
import torch
from fiftyone import ViewField as F

from fiftyone_clip_zeroshot.core.classify import (
    BACKGROUND,
    DEFAULT_TEMPLATE,
    class_templates,
    classify_image,
    score_boxes,
)
from fiftyone_clip_zeroshot.core.models.model import DEFAULT_MODEL, ClipModel
from fiftyone_clip_zeroshot.core.options import OptionsError, check_prompts
from fiftyone_clip_zeroshot.labeling.fo_private import declare_fields
from fiftyone_clip_zeroshot.labeling.runs.jobs import (
    LabelingError,
    Progress,
    SampleJob,
    check_field_name,
    check_target,
    resolve_model,
    run_job,
)
from fiftyone_clip_zeroshot.labeling.runs.labels import pixel_xyxy
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun

MISMATCH_TAG = "clip:mismatch"
REVIEW_TAG = "needs_review"


class VerifyJob(SampleJob):
    """CLIP reads every box of ``label_field`` (see ``verify``)."""

    def __init__(
        self,
        samples: fo.core.collections.SampleCollection,
        label_field: str,
        classes: Sequence[str] | None = None,
        model: str | ClipModel = DEFAULT_MODEL,
        margin: float = 0.1,
        template: str = DEFAULT_TEMPLATE,
        relabel_field: str | None = None,
        mismatch_tag: str = MISMATCH_TAG,
        device: str | None = None,
        skip_failures: bool = True,
        prompt_templates: str | Sequence[str] | None = None,
    ):
        self.field_types = {label_field: fo.Detections, **({relabel_field: fo.Detections} if relabel_field else {})}
        check_target(samples, self.field_types)  # a label_field of another type is refused here
        if label_field not in samples.get_field_schema():
            raise LabelingError(f"label_field {label_field!r} must be an existing fo.Detections field of the samples")
        if not 0 <= margin <= 2:
            raise OptionsError(f"margin must be in [0, 2] (a fraction of the box side), got {margin}")
        self.label_field = label_field
        self.relabel_field = relabel_field and check_field_name(relabel_field, "relabel_field")
        self.classes = check_prompts(classes or samples.distinct(f"{label_field}.detections.label"))
        self.templates = class_templates(template, prompt_templates)
        self.margin, self.mismatch_tag = margin, mismatch_tag
        self.skip_failures = skip_failures
        self.samples = samples.exists(label_field)
        self.model = resolve_model(model, device)
        self.mismatches = 0
        super().__init__()

    def start(self) -> None:
        declare_fields(self.samples, self.field_types)

    def labels(self, sample: fo.Sample, pixels: torch.Tensor) -> dict[str, fo.Detections]:
        detections = sample[self.label_field]  # edited in place after scoring, so ids stay
        xyxy = pixel_xyxy(detections.detections, (int(pixels.shape[2]), int(pixels.shape[1])))
        verdict = score_boxes(pixels, xyxy, self.classes, self.model, self.margin, self.templates)
        relabelled = []
        for detection, label, score in zip(detections.detections, verdict.labels, verdict.scores):
            detection["clip_label"], detection["clip_confidence"] = label, float(score)
            tags = [t for t in detection.tags if t != self.mismatch_tag]
            if label != detection.label:
                tags.append(self.mismatch_tag)
                self.mismatches += 1
            detection.tags = tags
            if label != BACKGROUND:
                relabelled.append(
                    fo.Detection(label=label, bounding_box=detection.bounding_box, confidence=float(score))
                )
        updates = {self.label_field: detections}
        if self.relabel_field:
            updates[self.relabel_field] = fo.Detections(detections=relabelled)
        return updates


class ClassifyJob(SampleJob):
    """Zero-shot image classification (see ``classify``)."""

    def __init__(
        self,
        samples: fo.core.collections.SampleCollection,
        classes: Sequence[str],
        label_field: str = "clip_classification",
        model: str | ClipModel = DEFAULT_MODEL,
        template: str = DEFAULT_TEMPLATE,
        store_logits: bool = False,
        device: str | None = None,
        skip_failures: bool = True,
        prompt_templates: str | Sequence[str] | None = None,
    ):
        self.classes = check_prompts(classes)
        if len(self.classes) < 2:
            raise OptionsError("classification needs at least two classes to choose between")
        self.templates = class_templates(template, prompt_templates)
        self.label_field, self.store_logits = check_field_name(label_field), store_logits
        self.skip_failures = skip_failures
        check_target(samples, {label_field: fo.Classification})
        self.samples = samples
        self.model = resolve_model(model, device)
        super().__init__()

    def start(self) -> None:
        declare_fields(self.samples, {self.label_field: fo.Classification})

    def labels(self, sample: fo.Sample, pixels: torch.Tensor) -> dict[str, fo.Classification]:
        probs, logits = classify_image(pixels, self.classes, self.model, self.templates)
        best = int(probs.argmax())
        label = fo.Classification(label=self.classes[best], confidence=float(probs[best]))
        if self.store_logits:
            label.logits = logits.astype(np.float32)
        return {self.label_field: label}


def verify(
    samples: fo.core.collections.SampleCollection,
    label_field: str,
    classes: Sequence[str] | None = None,
    model: str | ClipModel = DEFAULT_MODEL,
    margin: float = 0.1,
    template: str = DEFAULT_TEMPLATE,
    relabel_field: str | None = None,
    mismatch_tag: str = MISMATCH_TAG,
    device: str | None = None,
    skip_failures: bool = True,
    progress: Progress = True,
    prompt_templates: str | Sequence[str] | None = None,
) -> int:
    """Have CLIP read every box of ``label_field``; returns the number of disagreements.

    Each box is cropped with ``margin`` context and scored against ``classes`` (default: the
    field's own labels, in ``template``) plus a background prompt. Every detection gets
    ``clip_label`` (a class or ``"background"``) and ``clip_confidence``; where ``clip_label``
    differs from ``label`` the detection is tagged ``mismatch_tag`` (the tag is removed when a
    rerun agrees). With ``relabel_field``, a copy with CLIP's labels is written there (boxes
    CLIP reads as background are left out).

    Args:
        samples: a dataset or view of images.
        label_field: the ``fo.Detections`` field to check.
        classes: the labels to choose between (None: the field's own labels).
        model: a hub id, a local CLIP folder, a packaged name or a ``ClipModel``.
        margin: context around each box, as a fraction of its longer side.
        template: prompt for each class, e.g. ``"a photo of a {}"``.
        relabel_field: where to write a relabelled copy (None: no copy).
        mismatch_tag: label tag for disagreements.
        device: ``"cuda"``, ``"cpu"`` or None (the GPU when there is one).
        skip_failures: leave samples whose image cannot be read unchecked, and go on.
        progress: True, False or a callback ``(done, total)``.
        prompt_templates: read each class through several templates instead of ``template``: a
            set's name (``"photo"``; ``"openai"``, ``"simple"`` with open_clip) or ``"{}"`` strings.
    """
    job = VerifyJob(samples, label_field, classes, model, margin, template, relabel_field, mismatch_tag, device,
                    skip_failures, prompt_templates)
    run_job(job, progress)
    return job.mismatches


def classify(
    samples: fo.core.collections.SampleCollection,
    classes: Sequence[str],
    label_field: str = "clip_classification",
    model: str | ClipModel = DEFAULT_MODEL,
    template: str = DEFAULT_TEMPLATE,
    store_logits: bool = False,
    device: str | None = None,
    skip_failures: bool = True,
    progress: Progress = True,
    prompt_templates: str | Sequence[str] | None = None,
) -> None:
    """Zero-shot classification of each image into ``classes`` → ``fo.Classification`` in ``label_field``.

    ``confidence`` is the model's probability of the class: for CLIP a softmax over the classes,
    for SigLIP the class's own sigmoid probability.

    Args:
        samples: a dataset or view of images.
        classes: at least two class names.
        label_field: where the ``fo.Classification`` goes.
        model: a hub id, a local CLIP folder, a packaged name or a ``ClipModel``.
        template: prompt for each class, e.g. ``"a photo of a {}"``.
        store_logits: also store CLIP's logits, in the order of ``classes``.
        device: ``"cuda"``, ``"cpu"`` or None (the GPU when there is one).
        skip_failures: leave samples whose image cannot be read unlabelled, and go on.
        progress: True, False or a callback ``(done, total)``.
        prompt_templates: read each class through several templates instead of ``template`` (see ``verify``).
    """
    run_job(ClassifyJob(samples, classes, label_field, model, template, store_logits, device, skip_failures,
                        prompt_templates), progress)


@dataclass
class EvaluationReport:
    """A short summary of ``evaluate_detections``: COCO mAP, per-class AP and TP/FP/FN counts, over
    ``classes`` (None: every class); ``scope`` says in words which classes were counted."""

    eval_key: str
    map: float
    tp: int
    fp: int
    fn: int
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)
    classes: list[str] | None = None
    scope: str = "every class of both fields"

    @property
    def precision(self) -> float:
        return self.tp / max(self.tp + self.fp, 1)

    @property
    def recall(self) -> float:
        return self.tp / max(self.tp + self.fn, 1)

    def __str__(self) -> str:
        lines = [f"evaluation {self.eval_key!r}: mAP@[.5:.95] {self.map:.3f}   "
                 f"TP {self.tp}  FP {self.fp}  FN {self.fn}   "
                 f"precision {self.precision:.2f}  recall {self.recall:.2f}",
                 f"classes: {self.scope}",
                 f"{'class':<24}{'AP':>7}{'TP':>5}{'FP':>5}{'FN':>5}"]
        for name, row in self.per_class.items():
            ap = f"{row['ap']:>7.3f}" if row["ap"] >= 0 else f"{'n/a':>7}"  # FiftyOne: -1 = no ground truth
            lines.append(f"{name:<24}{ap}{row['tp']:>5.0f}{row['fp']:>5.0f}{row['fn']:>5.0f}")
        return "\n".join(lines)


def evaluate(
    samples: fo.core.collections.SampleCollection,
    pred_field: str,
    gt_field: str = "ground_truth",
    eval_key: str = "eval",
    iou: float = 0.5,
    classes: Sequence[str] | str | None = None,
) -> EvaluationReport:
    """FiftyOne's COCO-style ``evaluate_detections`` (TP/FP/FN per label under ``eval_key``, mAP)
    plus a printable per-class report.

    By default only the classes that were prompted count: the prompts of the ``detect`` run that
    wrote ``pred_field``, so ground truth of classes nobody asked for is not "missed". Labels of
    other classes, in both fields, get no evaluation attributes.

    Args:
        samples: a dataset or view with both fields.
        pred_field: the predicted ``fo.Detections`` field (e.g. ``detect``'s ``label_field``).
        gt_field: the ground-truth ``fo.Detections`` field.
        eval_key: where FiftyOne stores the evaluation (and each label's tp/fp/fn).
        iou: IoU at which a prediction matches a ground-truth box.
        classes: the classes to count: None (the run's prompts; every class for a field that no
            ``detect`` run wrote), ``"all"`` (every class of both fields) or a list.
    """
    names, scope = _evaluated_classes(samples, pred_field, classes)
    view = samples
    if names is not None:
        view = (samples.filter_labels(gt_field, F("label").is_in(names), only_matches=False)
                .filter_labels(pred_field, F("label").is_in(names), only_matches=False))
    results = view.evaluate_detections(pred_field, gt_field=gt_field, eval_key=eval_key, iou=iou, classes=names,
                                       compute_mAP=True, progress=False)
    preds, gts = _outcomes(view, pred_field, eval_key), _outcomes(view, gt_field, eval_key)
    per_class = {name: dict(ap=float(results.mAP(classes=[name])), tp=preds[name, "tp"], fp=preds[name, "fp"],
                            fn=gts[name, "fn"]) for name in results.classes}

    def total(counts: Counter, outcome: str) -> int:
        return sum(n for (_, kind), n in counts.items() if kind == outcome)

    return EvaluationReport(eval_key, float(results.mAP()), total(preds, "tp"), total(preds, "fp"), total(gts, "fn"),
                            per_class, names, scope)


def _evaluated_classes(samples: fo.core.collections.SampleCollection, pred_field: str,
                       classes: Sequence[str] | str | None) -> tuple[list[str] | None, str]:
    """The classes ``evaluate`` counts (None: all) and a line saying which they are and why."""
    if classes == "all":
        return None, "every class of both fields (classes='all')"
    if isinstance(classes, str):
        raise OptionsError(f"classes must be None, 'all' or a list of class names, got {classes!r}")
    if classes is not None:
        names = check_prompts(classes)
        return names, f"the {len(names)} given: {', '.join(names)}"
    run = DetectRun.load(samples, pred_field)
    if run is None:
        return None, f"every class of both fields ({pred_field!r} was not written by a detect run)"
    return run.prompts, (f"the {len(run.prompts)} prompted by the run that wrote {pred_field!r}: "
                         f"{', '.join(run.prompts)} (classes='all' compares every class)")


def _outcomes(samples: fo.core.collections.SampleCollection, field: str, eval_key: str) -> Counter:
    """How many labels of ``field`` have each (label, tp/fp/fn) under ``eval_key``."""
    labels = samples.values(f"{field}.detections.label", unwind=True)
    outcomes = samples.values(f"{field}.detections.{eval_key}", unwind=True)
    return Counter(zip(labels, outcomes))


def tag_for_review(
    samples: fo.core.collections.SampleCollection,
    label_field: str,
    confidence_below: float | None = None,
    mismatch_tag: str | None = MISMATCH_TAG,
    eval_key: str | None = None,
    gt_field: str | None = None,
    tag: str = REVIEW_TAG,
) -> int:
    """Tag the doubtful labels ``tag`` and return how many were tagged.

    Args:
        samples: a dataset or view.
        label_field: the ``fo.Detections`` field to review.
        confidence_below: doubtful below this confidence (None: not a criterion).
        mismatch_tag: doubtful when ``verify`` tagged it so (None: not a criterion).
        eval_key: doubtful when a false positive under this evaluation (None: not a criterion).
        gt_field: with ``eval_key``, also tag missed ground-truth objects (false negatives).
        tag: the label tag to add.
    """
    conditions = []
    if confidence_below is not None:
        conditions.append(F("confidence") < confidence_below)
    if mismatch_tag:
        conditions.append(F("tags").contains(mismatch_tag))
    if eval_key:
        conditions.append(F(eval_key) == "fp")
    before = samples.count_label_tags().get(tag, 0)
    if conditions:
        doubtful = conditions[0] if len(conditions) == 1 else F.any(conditions)
        samples.filter_labels(label_field, doubtful).tag_labels(tag, label_fields=[label_field])
    if gt_field and eval_key:
        samples.filter_labels(gt_field, F(eval_key) == "fn").tag_labels(tag, label_fields=[gt_field])
    return samples.count_label_tags().get(tag, 0) - before


def review_view(
    samples: fo.core.collections.SampleCollection,
    label_field: str,
    tag: str = REVIEW_TAG,
    eval_key: str | None = None,
) -> fo.DatasetView:
    """Patches to review: with ``eval_key``, the evaluation patches that hold a false positive or
    a false negative; otherwise one patch per label of ``label_field`` tagged ``tag``."""
    if eval_key:
        return samples.to_evaluation_patches(eval_key).match(F("type").is_in(["fp", "fn"]))
    return samples.select_labels(tags=tag, fields=label_field).to_patches(label_field)
