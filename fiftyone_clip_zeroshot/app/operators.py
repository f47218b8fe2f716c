"""App operators: forms only. The work is in ``fiftyone_clip_zeroshot.labeling`` (jobs and curation),
run by ``app.runner``.

Params (also for ``fiftyone.operators.execute_operator``); every run operator takes ``model``
(hub id, folder or "shapes-world"), ``device`` ("auto" | "cuda" | "cpu"), ``delegate`` (bool) and
the system ``view_target`` ("DATASET" | "CURRENT_VIEW" | "SELECTED_SAMPLES"). Prompts and classes
are one text, separated by commas or new lines, as the forms send them (a list works too):

- ``detect``: ``prompts``, ``method`` ("sliding_window" | "occlusion" | "proposals" | "dense"), ``label_field``,
  ``heatmaps``, ``candidates_field`` (also store the candidate boxes there), ``confidence_thresh`` (a
  float, or a dict prompt → threshold), ``calibrated_from`` (a
  field whose calibrated per-prompt thresholds to use), ``batch_size``, ``skip_existing``,
  ``embed_all_candidates``, ``refine_boxes`` (default True), ``workers``
  (above 1: queue that many delegated shards, see ``labeling.runs.shards``);
- ``verify_labels``: ``label_field`` (a Detections field), ``classes`` (default: its labels),
  ``margin``, ``relabel_field``;
- ``classify_images``: ``classes``, ``template``, ``label_field``, ``store_logits``;
- ``detect``, ``verify_labels`` and ``classify_images`` also take ``prompt_templates`` (a set's name, see
  ``core.models.prompt_templates``; "none" or empty: prompts read as typed);
- ``propose_candidates``: ``label_field``, ``small_objects`` (no model: the candidates need none);
- ``index_objects``: ``label_field`` (the boxes), ``brain_key``, ``backend`` ("sklearn" | "lancedb");
- ``evaluate_and_review``: ``pred_field``, ``gt_field``, ``eval_key``, ``confidence_below``, ``tag``
  (runs at once, then opens the review patches);
- ``promote_labels``: ``label_field`` (the reviewed field), ``dest_field`` (the curated one; runs at once
  on the current view);
- ``open_panel``: opens the CLIP zero-shot panel.
"""

from __future__ import annotations

from typing import Any

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_clip_zeroshot.app.panel import PANEL_NAME
from fiftyone_clip_zeroshot.app.runner import (
    DELEGATE_ABOVE,
    EMBED_ALL_HELP,
    EMBED_ALL_LABEL,
    NO_TEMPLATES,
    REFINE_HELP,
    REFINE_LABEL,
    TEMPLATES_HELP,
    TEMPLATES_LABEL,
    USER_ERRORS,
    JobOperator,
    job_config,
    templates_param,
    templates_view,
)
from fiftyone_clip_zeroshot.core.classify import DEFAULT_TEMPLATE
from fiftyone_clip_zeroshot.core.localizers import METHODS, SUMMARIES
from fiftyone_clip_zeroshot.core.models.model import (
    DEFAULT_MODEL,
    available_models,
    form_default_model,
    model_hint,
    model_label,
)
from fiftyone_clip_zeroshot.core.options import SMALL_OBJECTS, parse_prompts, thresholds_text
from fiftyone_clip_zeroshot.labeling.curation.calibrate import calibrated_thresholds
from fiftyone_clip_zeroshot.labeling.curation.curate import (
    MISMATCH_TAG,
    REVIEW_TAG,
    ClassifyJob,
    VerifyJob,
    evaluate,
    review_view,
    tag_for_review,
)
from fiftyone_clip_zeroshot.labeling.curation.decisions import promote
from fiftyone_clip_zeroshot.labeling.object_search.candidates import DEFAULT_CANDIDATES_FIELD, ProposeJob
from fiftyone_clip_zeroshot.labeling.object_search.index import DEFAULT_BRAIN_KEY, IndexObjectsJob, brain_key_problem
from fiftyone_clip_zeroshot.labeling.runs.detect import DetectJob
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun, plugin_fields
from fiftyone_clip_zeroshot.labeling.runs.results import unused_field_name
from fiftyone_clip_zeroshot.labeling.runs.shards import queue_shards, shard_job_options

SEPARATED = "separated by commas or new lines"
SEARCH_BACKENDS = ("sklearn", "lancedb")
SUGGESTED_MODELS = [DEFAULT_MODEL, "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14",
                    "google/siglip2-base-patch16-224", "google/siglip-base-patch16-224"]


class DetectWithClip(JobOperator):
    """Zero-shot detection of typed prompts with CLIP over a dataset, view or selection."""

    @property
    def config(self) -> foo.OperatorConfig:
        return job_config("detect", "CLIP zero-shot: detect objects",
                          "Localize text prompts with CLIP sliding windows, occlusion, region proposals or patch "
                          "tokens (dense); writes detections and heatmaps")

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        if ctx.params.get("shard_of"):  # a queued shard: everything else is in its run's record
            inputs.str("label_field", required=True, label="Detections field")
            inputs.str("shard_of", required=True, label="Shard of run")
            inputs.int("shard", label="Shard (from 0)")
            inputs.str("device", label="Device")
            return types.Property(inputs, view=types.View(label="CLIP zero-shot detection: one shard"))
        inputs.str("prompts", required=True, label="Prompts", view=types.TextFieldView(multiline=True, rows=2),
                   description=f"What to find, {SEPARATED}, e.g. 'a fluffy cat, a butterfly'")
        method = types.RadioGroup()
        for name in METHODS:
            method.add_choice(name, label=name.replace("_", " ").capitalize(), description=SUMMARIES[name])
        inputs.enum("method", method.values(), default=METHODS[0], label="Method", view=method)
        inputs.str("label_field", default=unused_field_name(ctx.dataset), required=True, label="Detections field",
                   description="A new name keeps earlier runs; an existing field's detections are replaced")
        inputs.bool("heatmaps", default=True, label="Store heatmaps", description="One heatmap field per prompt")
        inputs.str("candidates_field", label="Store candidate boxes in (optional)",
                   description="Every class-agnostic box the method chose from, labelled 'candidate': "
                               "where to look when an object was missed")
        inputs.float("confidence_thresh", min=0.0, max=1.0, label="Confidence threshold",
                     description=f"Empty: the default of the model's family and the method ({thresholds_text()})")
        calibrated = [name for name in plugin_fields(ctx.dataset) if DetectRun.load(ctx.dataset, name).calibrated]
        if calibrated:
            sources = types.Dropdown()
            for name in calibrated:
                sources.add_choice(name, label=name)
            inputs.enum("calibrated_from", sources.values(), view=sources, label="Per-prompt thresholds from",
                        description="The thresholds calibrated on this field's reviewed labels, for the prompts it has")
        inputs.int("batch_size", default=256, min=1, label="Crops per forward pass",
                   description="batch_size: windows, crops or tiles the encoder reads at once")
        inputs.bool("skip_existing", default=False, label="Skip samples that already have detections")
        inputs.bool("embed_all_candidates", default=False, label=EMBED_ALL_LABEL, description=EMBED_ALL_HELP)
        inputs.bool("refine_boxes", default=True, label=REFINE_LABEL, description=REFINE_HELP)
        _templates_input(inputs)
        inputs.int("workers", default=1, min=1, label="Workers",
                   description="Above 1: queue this many delegated operations over disjoint parts of the target, "
                               "one per `fiftyone delegated launch` worker (GPU) on this database")
        _run_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="CLIP zero-shot detection"))

    def resolve_delegation(self, ctx) -> bool:
        return False if _workers(ctx) > 1 else super().resolve_delegation(ctx)  # queuing shards is quick

    def execute(self, ctx):
        if _workers(ctx) > 1 and not ctx.params.get("shard_of"):
            return self._queue_shards(ctx)
        return super().execute(ctx)

    def _queue_shards(self, ctx):
        try:
            job = self.make_job(ctx)
            run = queue_shards(job, _workers(ctx), device=_model_params(ctx)["device"])
        except USER_ERRORS as error:
            raise ValueError(str(error)) from None
        if run is None:
            message = f"nothing to do: every sample of the target already has {job.label_field!r}"
        else:
            message = (f"queued {len(run.shards)} shards of run {run.run_id} over {job.total} samples into "
                       f"{job.label_field!r}; each `fiftyone delegated launch` worker runs one at a time")
        yield from self.report(ctx, {"message": message, "samples": 0, "failed": 0, "failures": []})

    def make_job(self, ctx) -> DetectJob:
        if ctx.params.get("shard_of"):  # one shard of a run queued by ``queue_shards``
            view, params = ctx.target_view(), ctx.params
            options = shard_job_options(view, params["label_field"], params["shard_of"], params.get("shard"))
            return DetectJob(view, device=_model_params(ctx)["device"], **options)
        prompts = parse_prompts(ctx.params.get("prompts"))
        thresh = ctx.params.get("confidence_thresh")
        if ctx.params.get("calibrated_from"):  # calibrated prompts take theirs, the others the one given
            calibrated = calibrated_thresholds(ctx.dataset, ctx.params["calibrated_from"], prompts)
            thresh = {**({p: thresh for p in prompts} if thresh is not None else {}), **calibrated}
        return DetectJob(
            ctx.target_view(),
            prompts,
            method=ctx.params.get("method", "sliding_window"),
            label_field=ctx.params.get("label_field", "clip_detections"),
            heatmaps=ctx.params.get("heatmaps", True),
            candidates_field=ctx.params.get("candidates_field") or None,
            skip_existing=ctx.params.get("skip_existing", False),
            embed_all_candidates=bool(ctx.params.get("embed_all_candidates")),
            refine_boxes=bool(ctx.params.get("refine_boxes", True)),
            prompt_templates=templates_param(ctx.params.get("prompt_templates")),
            confidence_thresh=thresh,
            batch_size=ctx.params.get("batch_size"),
            **_model_params(ctx),
        )

    def outcome(self, job: DetectJob, done: int) -> str:
        message = (f"labelled {done - len(job.failures)} of {job.total} samples into {job.label_field!r} "
                   f"({job.crops_note()})")
        note = job.cap_note()
        return message + (f"; {note}" if note else "")


class VerifyLabels(JobOperator):
    """CLIP reads every box of a detections field, stores its label/score and tags disagreements."""

    @property
    def config(self) -> foo.OperatorConfig:
        return job_config("verify_labels", "CLIP zero-shot: verify / relabel boxes",
                       f"Score each box's crop with CLIP; tag disagreements '{MISMATCH_TAG}'")

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        _field_choice(ctx, inputs, "label_field", fo.Detections, "Detections to verify")
        inputs.str("classes", label="Classes", description=f"{SEPARATED.capitalize()}; empty: the field's own labels")
        inputs.float("margin", default=0.1, min=0.0, max=2.0, label="Context margin",
                     description="Context around each box, as a fraction of its side")
        inputs.str("relabel_field", label="Relabelled copy (optional)",
                   description="Write a copy of the boxes with CLIP's labels to this field")
        _templates_input(inputs)
        _run_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Verify boxes with CLIP"))

    def make_job(self, ctx) -> VerifyJob:
        return VerifyJob(ctx.target_view(), ctx.params.get("label_field") or "",
                         parse_prompts(ctx.params.get("classes")) or None,
                         margin=ctx.params.get("margin", 0.1), relabel_field=ctx.params.get("relabel_field") or None,
                         prompt_templates=templates_param(ctx.params.get("prompt_templates")), **_model_params(ctx))

    def outcome(self, job: VerifyJob, done: int) -> str:
        checked = done - len(job.failures)
        return f"checked {checked} of {job.total} samples: {job.mismatches} boxes tagged '{job.mismatch_tag}'"


class ClassifyImages(JobOperator):
    """Zero-shot image classification into typed classes."""

    @property
    def config(self) -> foo.OperatorConfig:
        return job_config("classify_images", "CLIP zero-shot: classify images", "Zero-shot fo.Classification per image")

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        inputs.str("classes", required=True, label="Classes", description=f"At least two, {SEPARATED}")
        inputs.str("template", default=DEFAULT_TEMPLATE, label="Prompt template", description="'{}' is the class")
        inputs.str("label_field", default="clip_classification", required=True, label="Classification field")
        inputs.bool("store_logits", default=False, label="Store logits")
        _templates_input(inputs, "replaces the template above")
        _run_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Classify images with CLIP"))

    def make_job(self, ctx) -> ClassifyJob:
        return ClassifyJob(ctx.target_view(), parse_prompts(ctx.params.get("classes")),
                           label_field=ctx.params.get("label_field", "clip_classification"),
                           template=ctx.params.get("template") or DEFAULT_TEMPLATE,
                           store_logits=ctx.params.get("store_logits", False),
                           prompt_templates=templates_param(ctx.params.get("prompt_templates")), **_model_params(ctx))


class ProposeCandidates(JobOperator):
    """Class-agnostic candidate boxes per image (``fz.propose``), with no prompt and no model."""

    @property
    def config(self) -> foo.OperatorConfig:
        return job_config("propose_candidates", "CLIP zero-shot: propose candidate objects",
                          "Store every image's class-agnostic candidate boxes (no prompt, no model), best first, "
                          "to look through or to index for text search")

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        inputs.str("label_field", default=DEFAULT_CANDIDATES_FIELD, required=True, label="Candidates field",
                   description="An existing field's candidates are replaced")
        inputs.bool("small_objects", default=False, label="Crowds of small objects",
                    description="Segment in tiles, so that small objects keep their pixels (slower)")
        _target_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Propose candidate objects"))

    def make_job(self, ctx) -> ProposeJob:
        options = SMALL_OBJECTS if ctx.params.get("small_objects") else {}
        return ProposeJob(ctx.target_view(), ctx.params.get("label_field") or DEFAULT_CANDIDATES_FIELD, **options)

    def outcome(self, job: ProposeJob, done: int) -> str:
        return (f"proposed candidates for {done - len(job.failures)} of {job.total} samples into "
                f"{job.label_field!r}; open them with the patches button, or index them for text search")


class IndexObjects(JobOperator):
    """A FiftyOne Brain similarity index of a detections field's boxes, for the App's text search."""

    @property
    def config(self) -> foo.OperatorConfig:
        return job_config("index_objects", "CLIP zero-shot: index objects for text search",
                          "Embed every box of a detections field (candidates) with CLIP into a similarity index; "
                          "then search its patches view by text")

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        _field_choice(ctx, inputs, "label_field", fo.Detections, "Boxes to index (e.g. the candidates)")
        key = inputs.str("brain_key", default=DEFAULT_BRAIN_KEY, required=True, label="Brain key",
                         description="The index's name (letters, digits, underscores); the patches view's "
                                     "search box lists it")
        problem = brain_key_problem(ctx.params.get("brain_key", DEFAULT_BRAIN_KEY))
        if problem:  # refused when the form is submitted, before any work
            key.invalid, key.error_message = True, problem
        backends = types.Dropdown()
        for name in SEARCH_BACKENDS:
            backends.add_choice(name, label=name)
        inputs.enum("backend", backends.values(), default=SEARCH_BACKENDS[0], label="Backend", view=backends,
                    description="sklearn: in memory; lancedb: on disk, for datasets that outgrow memory")
        _model_inputs(ctx, inputs)
        _target_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="Index objects for text search"))

    def make_job(self, ctx) -> IndexObjectsJob:
        return IndexObjectsJob(ctx.target_view(), ctx.params.get("label_field") or "",
                               ctx.params.get("brain_key") or DEFAULT_BRAIN_KEY,
                               backend=ctx.params.get("backend") or None, **_model_params(ctx))

    def outcome(self, job: IndexObjectsJob, done: int) -> str:
        return f"{job.result}; open the {job.label_field!r} patches and search them by text"


class EvaluateAndReview(foo.Operator):
    """Evaluate detections against ground truth, tag doubtful labels and open them for review."""

    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(name="evaluate_and_review", label="CLIP zero-shot: evaluate and review",
                                  description=f"COCO evaluation, tag doubtful labels '{REVIEW_TAG}', "
                                              "open the review patches",
                                  dynamic=True)

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        _field_choice(ctx, inputs, "pred_field", fo.Detections, "Predictions")
        _field_choice(ctx, inputs, "gt_field", fo.Detections, "Ground truth")
        inputs.str("eval_key", default="eval", label="Evaluation key")
        inputs.float("confidence_below", min=0.0, max=1.0, label="Also tag predictions with confidence below")
        inputs.str("tag", default=REVIEW_TAG, label="Review tag")
        return types.Property(inputs, view=types.View(label="Evaluate and review"))

    def execute(self, ctx) -> dict[str, Any]:
        params = ctx.params
        if not params.get("pred_field") or not params.get("gt_field") or params["pred_field"] == params["gt_field"]:
            raise ValueError("choose two different detections fields: predictions and ground truth")
        view = ctx.dataset.view() if ctx.view is None else ctx.view
        eval_key = params.get("eval_key", "eval")
        report = evaluate(view, params["pred_field"], params["gt_field"], eval_key=eval_key)
        tagged = tag_for_review(view, params["pred_field"], confidence_below=params.get("confidence_below"),
                                eval_key=eval_key, gt_field=params["gt_field"], tag=params.get("tag", REVIEW_TAG))
        ctx.ops.set_view(review_view(view, params["pred_field"], eval_key=eval_key))
        return {"report": str(report), "tagged": tagged, "map": report.map}

    def resolve_output(self, ctx) -> types.Property:
        outputs = types.Object()
        outputs.float("map", label="mAP@[.5:.95]")
        outputs.int("tagged", label="Labels tagged for review")
        outputs.str("report", label="Report", view=types.CodeView(language="text"))
        return types.Property(outputs)


def _workers(ctx) -> int:
    return int(ctx.params.get("workers") or 1)


def _model_params(ctx) -> dict[str, Any]:
    device = ctx.params.get("device", "auto")
    return dict(model=ctx.params.get("model") or DEFAULT_MODEL, device=None if device == "auto" else device)


def _templates_input(inputs: types.Object, note: str = "") -> None:
    view = templates_view()
    inputs.enum("prompt_templates", view.values(), default=NO_TEMPLATES, label=TEMPLATES_LABEL, view=view,
                description=TEMPLATES_HELP + (f"; {note}" if note else ""))


def _field_choice(ctx, inputs: types.Object, name: str, label_type: type, label: str) -> None:
    fields = types.Dropdown()
    for field in ctx.dataset.get_field_schema(embedded_doc_type=label_type):
        fields.add_choice(field, label=field)
    inputs.enum(name, fields.values(), required=True, label=label, view=fields)


def _run_inputs(ctx, inputs: types.Object) -> None:
    """Model, device, target and delegation: the same on every run operator."""
    _model_inputs(ctx, inputs)
    _target_inputs(ctx, inputs)


def _model_inputs(ctx, inputs: types.Object) -> None:
    models = types.AutocompleteView()
    for name in dict.fromkeys([*available_models(), *SUGGESTED_MODELS]):
        models.add_choice(name, label=model_label(name))
    hint = model_hint(ctx.params.get("model") or form_default_model())
    inputs.str("model", default=form_default_model(), label="CLIP model", view=models,
               description=hint or "Hugging Face id, local folder, or 'shapes-world' (the offline demo model)")
    device = types.Dropdown()
    for choice in ("auto", "cuda", "cpu"):
        device.add_choice(choice, label=choice)
    inputs.enum("device", device.values(), default="auto", label="Device", view=device)


def _target_inputs(ctx, inputs: types.Object) -> None:
    inputs.view_target(ctx)
    count = len(ctx.target_view())
    inputs.bool("delegate", default=count > DELEGATE_ABOVE, label="Delegate (run in the background)",
                description=f"{count} samples. Immediate runs stop near the {fo.config.operator_timeout}s operator "
                            "timeout; delegate large jobs and run them with `fiftyone delegated launch`.")


class PromoteLabels(foo.Operator):
    """Copy the accepted and relabeled labels of a reviewed field into a curated field."""

    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(name="promote_labels", label="CLIP zero-shot: promote reviewed labels",
                                  description="Write the accepted and relabeled labels (edited boxes kept) into a "
                                              "curated field; rejected and unreviewed ones never reach it")

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        _field_choice(ctx, inputs, "label_field", fo.Detections, "Reviewed detections")
        inputs.str("dest_field", label="Curated field", description="Empty: <reviewed field>_reviewed")
        return types.Property(inputs, view=types.View(label="Promote reviewed labels"))

    def execute(self, ctx) -> dict[str, Any]:
        view = ctx.dataset.view() if ctx.view is None else ctx.view
        field = ctx.params.get("label_field") or ""
        dest = ctx.params.get("dest_field") or f"{field}_reviewed"
        try:
            count = promote(view, field, dest_field=dest)
        except USER_ERRORS as error:
            raise ValueError(str(error)) from None
        ctx.ops.reload_dataset()
        return {"message": f"promoted {count} labels of {field!r} into {dest!r}", "promoted": count}

    def resolve_output(self, ctx) -> types.Property:
        outputs = types.Object()
        outputs.str("message", label="Result")
        return types.Property(outputs)


class OpenPanel(foo.Operator):
    """Opens the CLIP zero-shot panel beside the grid: how the operator browser finds it."""

    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(name="open_panel", label="CLIP zero-shot: open panel",
                                  description="Prompt, run, inspect and curate detections in a panel beside the grid")

    def execute(self, ctx) -> None:
        ctx.ops.open_panel(PANEL_NAME, layout="horizontal", is_active=True)


def register(plugin) -> None:
    for operator in (DetectWithClip, VerifyLabels, ClassifyImages, ProposeCandidates, IndexObjects, EvaluateAndReview,
                     PromoteLabels, OpenPanel):
        plugin.register(operator)
