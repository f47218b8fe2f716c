"""The one runner of labelling jobs in the App: every run operator (and, through the detect
operator, the panel) drives a ``SampleJob`` here, immediately with progress or delegated."""

from __future__ import annotations

import time
from typing import Any

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_clip_zeroshot.core.embedding_store import open_store
from fiftyone_clip_zeroshot.core.models.model import ModelLoadError
from fiftyone_clip_zeroshot.core.models.prompt_templates import available_template_sets
from fiftyone_clip_zeroshot.labeling.runs.jobs import SampleJob

DELEGATE_ABOVE = 25  # samples; larger targets default to delegated execution, unless a warm run is short:
WARM_MS = {"sliding_window": 20, "proposals": 15, "dense": 18}  # ms per image of a run of new prompts whose
# crops all come from the store: benchmarks/reprompt.py on the 2-core CPU with a margin (docs/speed.md);
# occlusion's occluded crops follow the prompts
INLINE_WARM_S = 60  # an embedded target runs inline while its warm run is estimated shorter than this
USER_ERRORS = (ValueError, ModelLoadError)  # OptionsError, LabelingError and bad templates are ValueErrors
PANEL_STATUS = "status"  # the panel state key a run started from a panel reports its progress to
EMBED_ALL_LABEL = "Embed every candidate"  # the detect form's and the panel's embed_all_candidates
EMBED_ALL_HELP = ("The first run encodes every candidate box once, so that later prompts on these samples "
                  "encode nothing (the embedding store)")
REFINE_LABEL = "Refine boxes"  # the detect form's and the panel's refine_boxes
REFINE_HELP = ("Of a prompt's overlapping boxes about as sure, keep the one that best frames the object "
               "(fewer loose or partial boxes)")
TEMPLATES_LABEL = "Prompt templates"  # the forms' and the panel's prompt_templates
TEMPLATES_HELP = ("Read each prompt through a set of templates and average them (a prompt ensemble); prompts "
                  "are then class names ('cat'), not captions")
NO_TEMPLATES = "none"


def templates_view() -> types.Dropdown:
    """The named template sets this installation reads, after "none" (prompts read as typed)."""
    view = types.Dropdown()
    for name in (NO_TEMPLATES, *available_template_sets()):
        view.add_choice(name, label=name)
    return view


def templates_param(value: str | None) -> str | None:
    """A form's template set as the ``prompt_templates`` option (None: prompts read as typed)."""
    return None if not value or value == NO_TEMPLATES else value


class JobOperator(foo.Operator):
    """Runs a ``SampleJob`` over the target view: delegated runs return their summary (kept with
    the operation); immediate runs stream progress, stop cleanly before ``operator_timeout`` and
    end with a notification and the summary as output. Started from a panel, the progress and
    the summary go to the panel's status line instead."""

    def make_job(self, ctx) -> SampleJob:
        raise NotImplementedError

    def outcome(self, job: SampleJob, done: int) -> str:
        return f"processed {done - len(job.failures)} of {job.total} samples"

    def resolve_delegation(self, ctx) -> bool:
        delegate = ctx.params.get("delegate")
        return bool(delegate) if delegate is not None else len(ctx.target_view()) > DELEGATE_ABOVE

    def execute(self, ctx):
        try:
            job = self.make_job(ctx)
        except USER_ERRORS as error:
            raise ValueError(str(error)) from None
        if ctx.delegated:
            done = 0
            for done, total in job.steps():
                ctx.set_progress(progress=done / total, label=f"{done}/{total} samples")
            return self._summary(job, done)
        return self._run_immediately(ctx, job)

    def _run_immediately(self, ctx, job: SampleJob):
        started = time.monotonic()
        deadline = started + 0.8 * fo.config.operator_timeout
        done = 0
        for done, total in job.steps():
            yield from _progress(ctx, done, total, done / max(time.monotonic() - started, 1e-9))
            if time.monotonic() > deadline and done < total:
                yield ctx.ops.reload_dataset()
                raise TimeoutError(
                    f"stopped after {done} of {total} samples, close to the {fo.config.operator_timeout}s limit of "
                    "immediate runs; labels so far are saved. Rerun with 'skip existing' or schedule it (delegate)."
                )
        yield ctx.ops.reload_dataset()
        yield from self.report(ctx, self._summary(job, done))

    def report(self, ctx, summary: dict[str, Any]):
        """End an immediate run: a notification, and the summary in the panel's status line when a
        panel started it, else in an output dialog."""
        yield ctx.ops.notify(summary["message"], variant="warning" if summary.get("failed") else "success")
        if ctx.panel_id:
            yield ctx.ops.patch_panel_state({PANEL_STATUS: summary["message"][0].upper() + summary["message"][1:]})
        else:
            yield ctx.ops.show_output(self.resolve_output(ctx).to_json(), summary)

    def _summary(self, job: SampleJob, done: int) -> dict[str, Any]:
        failures = [f"{sample_id}: {message}" for sample_id, message in job.failures.items()]
        message = self.outcome(job, done)
        if failures:
            message += f"; {len(failures)} failed and were left without labels (see failures)"
        return {"message": message, "samples": done, "failed": len(failures), "failures": failures}

    def resolve_output(self, ctx) -> types.Property:
        outputs = types.Object()
        outputs.str("message", label="Result")
        outputs.int("samples", label="Samples processed")
        outputs.int("failed", label="Samples that failed (left without labels)")
        outputs.list("failures", types.String(), label="Failures (sample id: error)")
        return types.Property(outputs)


def runs_inline(samples: fo.core.collections.SampleCollection, model: str, method: str) -> bool:
    """Whether a detect run on ``samples`` runs inline: up to ``DELEGATE_ABOVE`` samples, or more
    when the store holds every image under ``model`` (a run of new prompts reads their crops back)
    and the warm run is estimated under ``INLINE_WARM_S`` (``WARM_MS``)."""
    count = len(samples)
    if count <= DELEGATE_ABOVE:
        return True
    if count * WARM_MS.get(method, float("inf")) / 1000 > INLINE_WARM_S:
        return False
    return open_store(True).embedded(samples.values("filepath"), model) == count


def job_config(name: str, label: str, description: str) -> foo.OperatorConfig:
    """The configuration every run operator shares: a generator, immediate or delegated."""
    return foo.OperatorConfig(name=name, label=label, description=description, dynamic=False,
                              execute_as_generator=True, allow_immediate_execution=True, allow_delegated_execution=True)


def _progress(ctx, done: int, total: int, rate: float):
    """The panel's status line when a panel started the run, else the App's progress dialog (a
    dialog that stays open until its Done is pressed, so never over a panel that says it all);
    ``rate``: samples per second so far."""
    label = f"{done}/{total} samples ({rate:.1f} images/s)"
    if ctx.panel_id:
        yield ctx.ops.patch_panel_state({PANEL_STATUS: f"Running: {label} done…"})
    else:
        yield ctx.ops.set_progress(progress=done / total, label=label)
