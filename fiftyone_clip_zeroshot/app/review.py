"""The panel's Review section: step through a run's labels (likeliest mistakes first), accept,
reject or relabel each, undo, then calibrate per-prompt thresholds and promote the approved labels.

Every decision is a label tag written by ``labeling.curation.decisions``, so the review survives closing the
App and reads the same as tags set in the modal or from Python. Python panels cannot bind keys,
so the decisions are buttons; the App's own label tagging (the modal's tag menu) works too.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators.types as types

from fiftyone_clip_zeroshot.labeling.curation.calibrate import calibrate
from fiftyone_clip_zeroshot.labeling.curation.curate import MISMATCH_TAG
from fiftyone_clip_zeroshot.labeling.curation.decisions import (
    ACCEPTED,
    REJECTED,
    RELABELED,
    ReviewedLabel,
    accept,
    clear_decisions,
    promote,
    reject,
    relabel,
    review_queue,
    review_report,
    reviewed_labels,
    run_thresholds,
)
from fiftyone_clip_zeroshot.labeling.runs.jobs import LabelingError
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun
from fiftyone_clip_zeroshot.labeling.runs.results import calibrated_view, detection_fields

UNDO_DEPTH = 50  # decisions the panel can take back, newest first
STATUS = "review_status"


class ReviewSection:
    """Handlers and rendering of the Review section, mixed into the panel."""

    def on_review_next(self, ctx) -> None:
        """Show the next label to review, leaving the current one undecided for later."""
        current = ctx.panel.state.get("review_label")
        if current:
            ctx.panel.state.set("review_skipped", [*(ctx.panel.state.get("review_skipped") or []), current])
        self._show_next(ctx)

    def on_accept(self, ctx) -> None:
        self._decide(ctx, lambda samples, field, ids: accept(samples, field, ids))

    def on_reject(self, ctx) -> None:
        self._decide(ctx, lambda samples, field, ids: reject(samples, field, ids))

    def on_relabel(self, ctx) -> None:
        label = ctx.panel.state.get("relabel_as")
        if not label:
            ctx.panel.state.set(STATUS, "Choose the label to relabel as first.")
            return
        self._decide(ctx, lambda samples, field, ids: relabel(samples, field, ids, label))

    def on_undo(self, ctx) -> None:
        """Take back the last decision: the label gets its state before it, and is shown again."""
        history = list(ctx.panel.state.get("review_history") or [])
        if not history:
            ctx.panel.state.set(STATUS, "Nothing to undo.")
            return
        last = history.pop()
        field, ids = last["field"], [last["label_id"]]
        restore = {ACCEPTED: accept, REJECTED: reject}.get(last["decision"])
        if last["decision"] == RELABELED:
            relabel(ctx.dataset, field, ids, last["label"])
        elif restore:
            restore(ctx.dataset, field, ids)
        else:
            clear_decisions(ctx.dataset, field, ids)
        ctx.panel.state.set("review_history", history)
        ctx.panel.state.set(STATUS, f"Undid the decision on a `{last['prompt']}` label.")
        self._show(ctx, _label(ctx, field, last["label_id"]))

    def on_open_modal(self, ctx) -> None:
        sample_id = ctx.panel.state.get("review_sample")
        if sample_id:
            ctx.ops.open_sample(id=sample_id)

    def on_calibrate(self, ctx) -> None:
        field = ctx.panel.state.get("inspect_field")
        target = float(ctx.panel.state.get("target_precision") or 0.9)
        calibration = calibrate(ctx.dataset, field, precision=target)
        ctx.panel.state.set(STATUS, "```\n" + str(calibration) + "\n```")
        self._refresh(ctx)

    def on_calibrated_view(self, ctx) -> None:
        """Filter the grid to the labels at/above their prompt's calibrated threshold."""
        field = ctx.panel.state.get("inspect_field")
        run = DetectRun.load(ctx.dataset, field)
        if run and run.calibrated:
            ctx.ops.set_view(calibrated_view(ctx.dataset, field, run.calibrated))

    def on_promote(self, ctx) -> None:
        field = ctx.panel.state.get("inspect_field")
        dest = ctx.panel.state.get("promote_field") or f"{field}_reviewed"
        try:
            count = promote(ctx.dataset, field, dest_field=dest)
        except LabelingError as error:
            ctx.panel.state.set(STATUS, f"Not promoted: {error}")
            return
        ctx.panel.state.set(STATUS, f"Promoted {count} accepted and relabeled labels of `{field}` into `{dest}`.")
        ctx.ops.reload_dataset()

    def _decide(self, ctx, decision) -> None:
        field, label_id = ctx.panel.state.get("inspect_field"), ctx.panel.state.get("review_label")
        if not label_id:
            ctx.panel.state.set(STATUS, "Press *Next label to review* first.")
            return
        before = _label(ctx, field, label_id)
        decision(ctx.dataset, field, [label_id])
        history = [*(ctx.panel.state.get("review_history") or []), dict(
            field=field, label_id=label_id, decision=before.decision, label=before.label, prompt=before.prompt)]
        ctx.panel.state.set("review_history", history[-UNDO_DEPTH:])
        ctx.panel.state.set(STATUS, "")
        self._show_next(ctx)

    def _show_next(self, ctx) -> None:
        field = ctx.panel.state.get("inspect_field")
        skipped = set(ctx.panel.state.get("review_skipped") or [])
        queue = [label for label in review_queue(ctx.dataset, field) if label.label_id not in skipped]
        if not queue and skipped:  # every label left was skipped once: go round again
            ctx.panel.state.set("review_skipped", [])
            queue = review_queue(ctx.dataset, field)
        if not queue:
            ctx.panel.state.set("review_label", None)
            ctx.panel.state.set(STATUS, "Every label is reviewed: calibrate the thresholds, or promote.")
            ctx.ops.clear_view()
            self._refresh(ctx)
            return
        self._show(ctx, queue[0])

    def _show(self, ctx, label: ReviewedLabel) -> None:
        """Make ``label`` the current one: the grid shows its sample with only that label."""
        field = ctx.panel.state.get("inspect_field")
        ctx.panel.state.set("review_label", label.label_id)
        ctx.panel.state.set("review_sample", label.sample_id)
        ctx.panel.state.set("relabel_as", None)
        ctx.ops.set_view(ctx.dataset.select(label.sample_id).select_labels(ids=[label.label_id], fields=field))
        self._refresh(ctx)

    def review_state(self, ctx) -> dict[str, Any]:
        """What the Review section shows, computed in ``_refresh``."""
        field = ctx.panel.state.get("inspect_field")
        run = DetectRun.load(ctx.dataset, field) if field else None
        if not run:
            return dict(review_progress=None, review_left=0, review_report=None, review_current=None,
                        relabel_choices=[], calibrated=False)
        report = review_report(ctx.dataset, field)
        current = ctx.panel.state.get("review_label")
        label = _label(ctx, field, current) if current else None
        threshold = run_thresholds(run, [label.prompt])[label.prompt] if label else None
        return dict(review_progress=report.progress(), review_left=report.labels - report.reviewed,
                    review_report=_report_markdown(report) if report.reviewed else None,
                    review_current=_current_markdown(label, threshold) if label else None,
                    relabel_choices=[p for p in run.prompts if not label or p != label.label],
                    calibrated=bool(run.calibrated))

    def render_review(self, ctx, panel: types.Object) -> None:
        state = ctx.panel.state
        panel.md("**Review**", name="review_header")
        if not state.get("review_progress") or state.get("inspect_field") not in detection_fields(ctx.dataset):
            panel.md("Pick a field of this plugin's runs above to review its labels.", name="review_none")
            return
        panel.md(state.get("review_progress"), name="review_progress")
        if state.get("review_left") or state.get("review_label"):  # nothing to start once every label is decided
            panel.btn("review_next", label="Next label to review" if state.get("review_label") else "Start reviewing",
                      on_click=self.on_review_next, variant="contained")
        if state.get("review_label"):
            panel.md(state.get("review_current") or "", name="review_current")
            panel.btn("accept", label="Accept", on_click=self.on_accept, variant="contained")
            panel.btn("reject", label="Reject", on_click=self.on_reject, variant="outlined")
            choices = types.Dropdown(label="Relabel as…")
            for prompt in state.get("relabel_choices") or []:
                choices.add_choice(prompt, label=prompt)
            panel.enum("relabel_as", choices.values(), view=choices, default=state.get("relabel_as"))
            panel.btn("relabel", label="Relabel", on_click=self.on_relabel, variant="outlined")
            panel.btn("open_modal", label="Open in the modal", on_click=self.on_open_modal)
        if state.get("review_history"):
            panel.btn("undo", label="Undo the last decision", on_click=self.on_undo)
        if state.get(STATUS):
            panel.md(state.get(STATUS), name=STATUS)
        panel.float("target_precision", label="Target precision", min=0.01, max=1.0,
                    default=state.get("target_precision") or 0.9)
        panel.btn("calibrate", label="Calibrate a threshold per prompt", on_click=self.on_calibrate)
        if state.get("calibrated"):
            panel.btn("calibrated_view", label="Show labels at the calibrated thresholds",
                      on_click=self.on_calibrated_view)
        panel.str("promote_field", label="Promote to field",
                  default=state.get("promote_field") or f"{state.get('inspect_field')}_reviewed")
        panel.btn("promote", label="Promote accepted and relabeled labels", on_click=self.on_promote)


def _label(ctx, field: str, label_id: str) -> ReviewedLabel | None:
    return next((label for label in reviewed_labels(ctx.dataset.select_labels(ids=[label_id], fields=field), field)
                 if label.label_id == label_id), None)


def _current_markdown(label: ReviewedLabel, threshold: float) -> str:
    why = ("CLIP disagrees with it" if MISMATCH_TAG in label.tags
           else "near the threshold" if abs(label.confidence - threshold) <= 0.1 else "")
    return (f"Reviewing **`{label.label}`**, confidence {label.confidence:.3f} (threshold {threshold:.2f})"
            + (f": {why}" if why else ""))


def _report_markdown(report) -> str:
    """The review report as a table narrow enough for the panel (the Python report's nine columns
    are wider than a panel beside the grid, and a table does not wrap)."""
    def share(value: float | None) -> str:
        return "–" if value is None else f"{value:.2f}"

    lines = ["| prompt | reviewed | ✓ · ✗ · ↺ | precision | calibrated |", "| --- | ---: | ---: | ---: | ---: |"]
    for p in report.prompts:
        calibrated = "–" if p.calibrated is None else f"{p.calibrated:.2f} → {share(p.calibrated_precision)}"
        lines.append(f"| {p.prompt} | {p.reviewed} of {p.labels} | {p.accepted} · {p.rejected} · {p.relabeled} "
                     f"| {share(p.precision)} at {p.threshold:.2f} | {calibrated} |")
    lines.append("\n✓ accepted · ✗ rejected · ↺ relabeled. Precision of the run's labels at its threshold; "
                 "calibrated: the threshold per prompt and the precision there.")
    return "\n".join(lines)
