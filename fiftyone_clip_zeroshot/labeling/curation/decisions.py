"""A person's review of auto-labels, kept as FiftyOne label tags, and what follows from it.

A decision is a label tag on the detection: ``accepted``, ``rejected``, or ``relabeled`` with the
new label written on the label itself and the old one kept as ``original_label``. So a review can
be done from the panel, from the App's own tagging, or from Python
(``view.select_labels(ids=...).tag_labels("accepted")``), and every function here reads the same.
Nothing here touches a box: boxes edited in the App's annotation mode keep their edit.

``review_queue`` orders the undecided labels (likeliest mistakes first); ``promote`` copies the
accepted and relabeled labels into a curated field; ``review_report`` counts the decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import fiftyone as fo

from fiftyone_clip_zeroshot.labeling.curation.curate import MISMATCH_TAG, REVIEW_TAG
from fiftyone_clip_zeroshot.labeling.runs.jobs import LabelingError, check_field_name, check_target
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun

ACCEPTED, REJECTED, RELABELED = "accepted", "rejected", "relabeled"
DECISIONS = (REJECTED, RELABELED, ACCEPTED)  # precedence, when a label carries more than one of them
ORIGINAL = "original_label"  # a relabeled detection's label before the fix
NEAR = 0.1  # a label within this of its prompt's threshold is "near the threshold" in the queue
PROMOTE_RUN_PREFIX = "clip_zeroshot_promoted_"


@dataclass
class ReviewedLabel:
    """One detection of the reviewed field, as the review sees it."""

    sample_id: str
    label_id: str
    label: str  # as it stands now (a relabeled one: the fix)
    prompt: str  # the label the run gave it (``original_label`` when relabeled)
    confidence: float
    tags: list[str]

    @property
    def decision(self) -> str | None:
        """``accepted``, ``rejected``, ``relabeled`` or None (not reviewed yet)."""
        return next((tag for tag in DECISIONS if tag in self.tags), None)

    @property
    def correct(self) -> bool | None:
        """Whether the run's label was right: accepted yes; rejected or relabeled to another label
        no; None when undecided, or relabeled without a known original (tagged by hand)."""
        if self.decision == ACCEPTED:
            return True
        if self.decision == REJECTED:
            return False
        if self.decision == RELABELED and self.prompt != self.label:
            return False
        return None


def reviewed_labels(samples: fo.core.collections.SampleCollection, label_field: str) -> list[ReviewedLabel]:
    """Every detection of ``label_field`` with its decision, in sample order."""
    paths = [f"{label_field}.detections.{name}" for name in ("id", "label", "confidence", "tags", ORIGINAL)]
    sample_ids, *columns = samples.values(["id", *paths])
    labels = []
    for sample_id, ids, names, confidences, tags, originals in zip(sample_ids, *columns):
        for label_id, name, confidence, label_tags, original in zip(ids or [], names or [], confidences or [],
                                                                    tags or [], originals or [None] * len(ids or [])):
            labels.append(ReviewedLabel(sample_id, label_id, name, original or name, float(confidence or 0.0),
                                        list(label_tags or [])))
    return labels


def run_thresholds(run: DetectRun | None, prompts: Iterable[str], calibrated: bool = True) -> dict[str, float]:
    """Each prompt's threshold: the calibrated one (with ``calibrated``), else the one its run used,
    else 0.5 (a field no run wrote)."""
    base = run.options.get("confidence_thresh") if run else None
    base = 0.5 if base is None else base  # a run at 0.0 keeps its 0.0
    used = {**(run.thresholds if run else {}), **(run.calibrated if run and calibrated else {})}
    return {prompt: float(used.get(prompt, base)) for prompt in prompts}


def review_queue(samples: fo.core.collections.SampleCollection, label_field: str) -> list[ReviewedLabel]:
    """The labels still to review, likeliest mistakes first: those CLIP disagreed with
    (``clip:mismatch``), then those within ``NEAR`` of their prompt's threshold, then the rest;
    nearest the threshold first within each."""
    labels = [label for label in reviewed_labels(samples, label_field) if label.decision is None]
    thresholds = run_thresholds(DetectRun.load(samples, label_field), {label.prompt for label in labels})

    def order(label: ReviewedLabel) -> tuple[int, float]:
        distance = abs(label.confidence - thresholds[label.prompt])
        return (0 if MISMATCH_TAG in label.tags else 1 if distance <= NEAR else 2), distance

    return sorted(labels, key=order)


def accept(samples: fo.core.collections.SampleCollection, label_field: str, label_ids: Sequence[str]) -> int:
    """Mark the labels ``label_ids`` of ``label_field`` right (tag ``accepted``); returns how many.
    A label fixed before gets its original label back."""
    return _decide(samples, label_field, label_ids, ACCEPTED)


def reject(samples: fo.core.collections.SampleCollection, label_field: str, label_ids: Sequence[str]) -> int:
    """Mark the labels wrong (tag ``rejected``: nothing there, or a box beyond fixing); returns how many."""
    return _decide(samples, label_field, label_ids, REJECTED)


def relabel(samples: fo.core.collections.SampleCollection, label_field: str, label_ids: Sequence[str],
            label: str) -> int:
    """Fix the labels' class to ``label`` (tag ``relabeled``; the run's label stays as
    ``original_label``). Relabeling to the run's own label is an accept. Returns how many."""
    if not isinstance(label, str) or not label.strip():
        raise LabelingError(f"relabel needs the new label, got {label!r}")
    label = label.strip()
    own = {found.label_id for found in _find(samples, label_field, label_ids) if found.prompt == label}
    return (_decide(samples, label_field, [i for i in label_ids if i in own], ACCEPTED)
            + _decide(samples, label_field, [i for i in label_ids if i not in own], RELABELED, label))


def clear_decisions(samples: fo.core.collections.SampleCollection, label_field: str,
                    label_ids: Sequence[str]) -> int:
    """Undo the decisions on the labels: no decision tag, the run's label back. Returns how many."""
    return _decide(samples, label_field, label_ids, None)


def _decide(samples, label_field: str, label_ids: Sequence[str], decision: str | None,
            new_label: str | None = None) -> int:
    """Set one decision (or none) on each label, keeping ``original_label`` right and boxes untouched."""
    labels = _find(samples, label_field, label_ids)
    if not labels:
        return 0
    ids = [label.label_id for label in labels]
    selected = samples.select_labels(ids=ids, fields=label_field)
    selected.untag_labels(list(DECISIONS), label_fields=[label_field])
    if decision:
        selected.tag_labels(decision, label_fields=[label_field])
    fixed = decision == RELABELED
    samples.set_label_values(f"{label_field}.detections.label",
                             {label.label_id: new_label if fixed else label.prompt for label in labels})
    samples.set_label_values(f"{label_field}.detections.{ORIGINAL}",
                             {label.label_id: label.prompt if fixed else None for label in labels}, dynamic=True)
    return len(labels)


def _find(samples, label_field: str, label_ids: Sequence[str]) -> list[ReviewedLabel]:
    """The labels ``label_ids`` of ``label_field``; raises naming any that are not there."""
    wanted = set(label_ids)
    labels = [label for label in reviewed_labels(samples, label_field) if label.label_id in wanted]
    missing = sorted(wanted - {label.label_id for label in labels})
    if missing:
        raise LabelingError(f"no label(s) {missing} in {label_field!r} of these samples")
    return labels


def promote(samples: fo.core.collections.SampleCollection, label_field: str, dest_field: str | None = None) -> int:
    """Write the accepted and relabeled labels of ``label_field``, as they stand (edited boxes,
    fixed labels), into ``dest_field``, and nothing else; returns how many labels it holds.

    Every sample of ``samples`` gets ``dest_field`` rewritten, so running it again after more review
    updates the field, and a rerun with no new decisions changes nothing (a promoted label keeps its
    id). Each promoted label records its source as ``source_id``. Rejected and undecided labels never
    reach it. ``dest_field`` must be new or a field ``promote`` wrote before.

    Args:
        samples: a dataset or view.
        label_field: the reviewed ``fo.Detections`` field.
        dest_field: the curated field (default: ``<label_field>_reviewed``).
    """
    dest = check_field_name(dest_field or f"{label_field}_reviewed", "dest_field")
    key = PROMOTE_RUN_PREFIX + dest
    if dest == label_field or label_field not in samples.get_field_schema():
        raise LabelingError(f"promote reads an existing detections field and writes another; got {label_field!r} "
                            f"-> {dest!r}")
    check_target(samples, {label_field: fo.Detections, dest: fo.Detections})
    if dest in samples.get_field_schema() and not samples.has_run(key):
        raise LabelingError(f"{dest!r} already exists and promote did not write it; choose a new dest_field so that "
                            "labels made elsewhere are never replaced")
    sources = samples.values(label_field)
    previous = samples.values(dest) if dest in samples.get_field_schema() else [None] * len(sources)
    promoted, total = [], 0
    for source, before in zip(sources, previous):
        kept_ids = {d.source_id: d.id for d in (before.detections if before else []) if d.has_field("source_id")}
        chosen = [_promoted(d, kept_ids.get(d.id)) for d in (source.detections if source else [])
                  if _decision_of(d.tags) in (ACCEPTED, RELABELED)]
        total += len(chosen)
        promoted.append(fo.Detections(detections=chosen) if chosen else None)
    samples.set_values(dest, promoted, dynamic=True)
    if not samples.has_run(key):
        samples.register_run(key, samples.init_run(source_field=label_field))
    return total


def _decision_of(tags: list[str]) -> str | None:
    return next((tag for tag in DECISIONS if tag in tags), None)


def _promoted(detection: fo.Detection, keep_id: str | None) -> fo.Detection:
    """A copy of a reviewed detection for the curated field: its label and box as they stand, the
    review's tags dropped, ``source_id`` pointing back (and the id of its earlier copy, if any)."""
    copy = detection.copy()
    if keep_id:
        copy.id = keep_id
    copy.tags = [t for t in detection.tags if t not in (*DECISIONS, REVIEW_TAG, MISMATCH_TAG)]
    copy["source_id"] = detection.id
    return copy


@dataclass
class PromptReview:
    """The decisions on one prompt's labels, and the auto-labels' precision they show."""

    prompt: str
    labels: int
    accepted: int
    rejected: int
    relabeled: int
    threshold: float  # the run's
    calibrated: float | None
    kept_correct: int  # decided labels at/above the calibrated threshold that were right...
    kept_decided: int  # ...of the decided ones at/above it

    @property
    def reviewed(self) -> int:
        return self.accepted + self.rejected + self.relabeled

    @property
    def precision(self) -> float | None:
        """Share of the reviewed labels (all at/above the run's threshold) that were right."""
        return self.accepted / self.reviewed if self.reviewed else None

    @property
    def calibrated_precision(self) -> float | None:
        return self.kept_correct / self.kept_decided if self.kept_decided else None


@dataclass
class ReviewReport:
    """Per prompt: reviewed, accepted, rejected, relabeled, and precision at the run's and the calibrated threshold."""

    label_field: str
    prompts: list[PromptReview]

    @property
    def reviewed(self) -> int:
        return sum(p.reviewed for p in self.prompts)

    @property
    def labels(self) -> int:
        return sum(p.labels for p in self.prompts)

    def progress(self) -> str:
        """ "n of N reviewed, a accepted, r rejected, l relabeled"."""
        count = {name: sum(getattr(p, name) for p in self.prompts) for name in ("accepted", "rejected", "relabeled")}
        return (f"{self.reviewed} of {self.labels} reviewed, {count['accepted']} accepted, {count['rejected']} "
                f"rejected, {count['relabeled']} relabeled")

    def rows(self) -> list[list[str]]:
        """The report as table cells, a header first."""
        def share(value: float | None, right: int, of: int) -> str:
            return "–" if value is None else f"{value:.2f} ({right}/{of})"

        rows = [["prompt", "labels", "reviewed", "accepted", "rejected", "relabeled", "precision at run threshold",
                 "calibrated threshold", "precision there"]]
        for p in self.prompts:
            calibrated = "–" if p.calibrated is None else f"{p.calibrated:.2f}"
            rows.append([p.prompt, str(p.labels), str(p.reviewed), str(p.accepted), str(p.rejected), str(p.relabeled),
                         share(p.precision, p.accepted, p.reviewed) + f" at {p.threshold:.2f}", calibrated,
                         share(p.calibrated_precision, p.kept_correct, p.kept_decided)])
        return rows

    def __str__(self) -> str:
        rows = self.rows()
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [f"review of {self.label_field!r}: {self.progress()}"]
        lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(lines)


def review_report(samples: fo.core.collections.SampleCollection, label_field: str) -> ReviewReport:
    """Count the decisions on ``label_field`` per prompt (the run's prompts first), with the
    precision of the auto-labels at the run's threshold and at the calibrated one."""
    labels = reviewed_labels(samples, label_field)
    run = DetectRun.load(samples, label_field)
    prompts = list(dict.fromkeys([*(run.prompts if run else []), *(label.prompt for label in labels)]))
    thresholds = run_thresholds(run, prompts, calibrated=False)
    rows = []
    for prompt in prompts:
        mine = [label for label in labels if label.prompt == prompt]
        decisions = [label.decision for label in mine]
        calibrated = run.calibrated.get(prompt) if run else None
        kept = [label.correct for label in mine
                if label.correct is not None and calibrated is not None and label.confidence >= calibrated]
        rows.append(PromptReview(prompt, len(mine), decisions.count(ACCEPTED), decisions.count(REJECTED),
                                 decisions.count(RELABELED), thresholds[prompt], calibrated, sum(kept), len(kept)))
    return ReviewReport(label_field, rows)
