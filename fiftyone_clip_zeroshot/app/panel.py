"""The "CLIP zero-shot" App panel: prompt and run, inspect the results, filter, show heatmaps, tag,
review the labels (``app.review``), and find objects by text in an object index (``app.find``).

A Python panel (no JavaScript build). Its handlers only wire the App to the library: a run is
the detect operator (``app.runner`` runs it, immediately with progress or delegated),
``labeling.runs.results`` reads results back, ``tag_for_review`` tags.
"""

from __future__ import annotations

import re

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_clip_zeroshot.app.find import FindSection
from fiftyone_clip_zeroshot.app.review import ReviewSection
from fiftyone_clip_zeroshot.app.runner import (
    EMBED_ALL_HELP,
    EMBED_ALL_LABEL,
    NO_TEMPLATES,
    PANEL_STATUS,
    REFINE_HELP,
    REFINE_LABEL,
    TEMPLATES_HELP,
    TEMPLATES_LABEL,
    runs_inline,
    templates_param,
    templates_view,
)
from fiftyone_clip_zeroshot.core.embedding_store import open_store
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.core.models.model import available_models, form_default_model, model_hint, model_label
from fiftyone_clip_zeroshot.core.options import OptionsError, check_prompts, parse_prompts, thresholds_text
from fiftyone_clip_zeroshot.labeling.curation.curate import REVIEW_TAG, tag_for_review
from fiftyone_clip_zeroshot.labeling.runs.labels import CANDIDATE_LABEL
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun
from fiftyone_clip_zeroshot.labeling.runs.results import (
    busiest_field,
    confidence_view,
    detection_fields,
    fields_to_show,
    histogram_traces,
    overwrite_note,
    prompt_stats,
    unused_field_name,
)
from fiftyone_clip_zeroshot.labeling.runs.shard_states import DETECT_URI
from fiftyone_clip_zeroshot.labeling.runs.shards import RECOVERABLE, requeue, run_status

PANEL_NAME = "clip_zeroshot_panel"
TARGETS = {"DATASET": "Dataset", "CURRENT_VIEW": "Current view", "SELECTED_SAMPLES": "Selected samples"}
DEFAULTS = dict(prompts="", method=METHODS[0], threshold=None, target="CURRENT_VIEW", slider=0.5, direction="above")
RAISED = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception): ")  # "ValueError: ..."
EMBEDDED_COUNT_MAX = 2000  # the Run section counts the target's embedded samples up to this many
NO_RUNS = "No detections of this plugin in the selected field yet: run detection above, or pick a field."


class ClipZeroShotPanel(ReviewSection, FindSection, foo.Panel):
    """Prompt, run, inspect and act on CLIP zero-shot detections beside the samples grid."""

    @property
    def config(self) -> foo.PanelConfig:
        return foo.PanelConfig(name=PANEL_NAME, label="CLIP zero-shot", surfaces="grid",
                               help_markdown="Type prompts, run CLIP detection on the target, inspect and curate.")

    def on_load(self, ctx) -> None:
        """Defaults a newcomer can run at once: a model that loads here, a field no run wrote yet,
        and Inspect on the plugin's field with the most samples (never someone else's field)."""
        state = ctx.panel.state
        defaults = dict(DEFAULTS, model=form_default_model(), label_field=unused_field_name(ctx.dataset))
        for key, value in defaults.items():
            if state.get(key) is None and value is not None:
                state.set(key, value)
        if ctx.selected:
            state.set("target", "SELECTED_SAMPLES")
        if state.get("inspect_field") not in detection_fields(ctx.dataset):
            state.set("inspect_field", busiest_field(ctx.dataset))
        ctx.panel.data.clear()  # data an earlier version kept (its histogram) would hide the view's
        self._refresh(ctx)

    def on_change_selected(self, ctx) -> None:
        """The target follows the grid selection."""
        if ctx.selected:
            ctx.panel.state.set("target", "SELECTED_SAMPLES")
        elif ctx.panel.state.get("target") == "SELECTED_SAMPLES":
            ctx.panel.state.set("target", "CURRENT_VIEW")

    def on_change_field(self, ctx) -> None:
        ctx.panel.state.set("inspect_field", ctx.params.get("value"))
        for key in ("review_label", "review_skipped", "promote_field"):
            ctx.panel.state.set(key, None)
        self._refresh(ctx)

    def on_edit(self, ctx) -> None:
        """After an edit of the prompts or the field: show the prompts as the run will read them, and
        what the field would replace (render follows every handler)."""

    def on_run(self, ctx) -> None:
        """Start the detect operator on the target: immediately, its progress in the status line,
        or delegated above ``DELEGATE_ABOVE`` samples unless every image is embedded and the warm
        run is short (``runs_inline``)."""
        state = ctx.panel.state
        try:
            prompts = check_prompts(parse_prompts(state.get("prompts")))
        except OptionsError as error:
            state.set(PANEL_STATUS, f"Not run: {error}")
            return
        target = _target_view(ctx)
        count = len(target)
        method, model = state.get("method") or METHODS[0], state.get("model") or form_default_model()
        params = dict(prompts=", ".join(prompts), method=method, model=model,
                      label_field=state.get("label_field") or unused_field_name(ctx.dataset),
                      confidence_thresh=state.get("threshold"), view_target=state.get("target"),
                      calibrated_from=state.get("inspect_field") if state.get("use_calibrated") else None,
                      embed_all_candidates=bool(state.get("embed_all_candidates")),
                      refine_boxes=state.get("refine_boxes") is not False,
                      prompt_templates=templates_param(state.get("prompt_templates")),
                      delegate=not runs_inline(target, model, method), panel_id=ctx.panel_id)
        ctx.prompt(DETECT_URI, params=params, on_success=self.on_run_done, on_error=self.on_run_failed,
                   skip_prompt=True)
        state.set(PANEL_STATUS, f"Scheduling a delegated run over {samples_text(count)}…" if params["delegate"]
                  else f"Starting on {samples_text(count)}…")

    def on_run_done(self, ctx) -> None:
        """The detect operator finished (its summary is already in the status line) or was scheduled."""
        params = ctx.params.get("original_params") or {}
        if params.get("delegate"):
            ctx.panel.state.set(PANEL_STATUS, "Scheduled a delegated run; start it with `fiftyone delegated launch` "
                                              "(or your orchestrator).")
            return
        ctx.panel.state.set("inspect_field", params.get("label_field"))
        ctx.ops.reload_dataset()
        self._refresh(ctx)

    def on_run_failed(self, ctx) -> None:
        ctx.panel.state.set(PANEL_STATUS, f"Not run: {raised_message(ctx.params.get('error'))}")

    def on_slider(self, ctx) -> None:
        """Filter the grid to the labels above/below the slider."""
        field = ctx.panel.state.get("inspect_field")
        if field in detection_fields(ctx.dataset):
            above = ctx.panel.state.get("direction", "above") == "above"
            ctx.ops.set_view(confidence_view(ctx.dataset, field, float(ctx.panel.state.get("slider", 0.5)), above))

    def on_show_heatmap(self, ctx) -> None:
        field = ctx.panel.state.get("inspect_field")
        ctx.ops.set_active_fields(fields_to_show(ctx.dataset, field, ctx.params["prompt"]))

    def on_tag(self, ctx) -> None:
        field, threshold = ctx.panel.state.get("inspect_field"), float(ctx.panel.state.get("slider", 0.5))
        tagged = tag_for_review(ctx.dataset, field, confidence_below=threshold, mismatch_tag=None)
        ctx.panel.state.set(PANEL_STATUS, f"Tagged {tagged} labels of `{field}` with confidence < {threshold:.2f} "
                                          f"as `{REVIEW_TAG}`.")
        ctx.ops.reload_dataset()

    def on_clear(self, ctx) -> None:
        ctx.ops.clear_view()

    def on_candidate_patches(self, ctx) -> None:
        """Show the inspected candidates field's boxes as patches, best (objectness) first."""
        field = ctx.panel.state.get("inspect_field")
        if field in detection_fields(ctx.dataset):
            ctx.ops.set_view(ctx.dataset.to_patches(field).sort_by(f"{field}.confidence", reverse=True))

    def on_requeue(self, ctx) -> None:
        """Run the lost and failed shards of the inspected sharded run again (``requeue``)."""
        field = ctx.panel.state.get("inspect_field")
        before = ctx.panel.state.get("requeue") or 0
        status = requeue(ctx.dataset, field)
        ctx.panel.state.set(PANEL_STATUS, f"Requeued {before} shards of run {status.run_id}: a "
                                          "`fiftyone delegated launch` worker runs them.")
        self._refresh(ctx)

    def _refresh(self, ctx) -> None:
        field = ctx.panel.state.get("inspect_field")
        run = DetectRun.load(ctx.dataset, field) if field else None
        stats = prompt_stats(ctx.dataset, field, run) if field in detection_fields(ctx.dataset) else []
        status = run_status(ctx.dataset, field) if run and run.shards else None
        ctx.panel.state.set("summary", _summary_markdown(stats, run, str(status) if status else None))
        ctx.panel.state.set("requeue", sum(s.state in RECOVERABLE for s in status.shards) if status else 0)
        ctx.panel.state.set("heatmap_prompts", [s.prompt for s in stats if s.heatmap_field])
        ctx.panel.state.set("candidates", field in detection_fields(ctx.dataset) and
                            ctx.dataset.distinct(f"{field}.detections.label") == [CANDIDATE_LABEL])
        ctx.panel.state.set("traces", histogram_traces(stats))
        for key, value in self.review_state(ctx).items():
            ctx.panel.state.set(key, value)

    def render(self, ctx) -> types.Property:
        state = ctx.panel.state
        panel = types.Object()
        panel.md("**Run**", name="run_header")
        panel.str("prompts", label="Prompts", default=state.get("prompts") or "", on_change=self.on_edit,
                  view=types.TextFieldView(multiline=True, rows=2),
                  description="Separated by commas or new lines, e.g. 'a fluffy cat, a butterfly'")
        panel.md(_prompts_markdown(state.get("prompts")), name="parsed_prompts")
        method = types.RadioGroup(orientation="horizontal")
        for name in METHODS:
            method.add_choice(name, label=name.replace("_", " "))
        panel.enum("method", method.values(), label="Method", view=method, default=state.get("method"))
        panel.str("model", label="CLIP model", default=state.get("model"),
                  description=model_hint(state.get("model") or form_default_model())
                  or "Hugging Face id, local folder, or one of: " + ", ".join(map(model_label, available_models())))
        panel.float("threshold", label="Confidence threshold", min=0, max=1,
                    description=f"empty: the default of the model's family and the method ({thresholds_text()})")
        templates = templates_view()
        panel.enum("prompt_templates", templates.values(), label=TEMPLATES_LABEL, view=templates,
                   default=state.get("prompt_templates") or NO_TEMPLATES, description=TEMPLATES_HELP)
        if state.get("calibrated"):
            panel.bool("use_calibrated", label=f"Per-prompt thresholds calibrated on `{state.get('inspect_field')}`",
                       default=bool(state.get("use_calibrated")),
                       description="For the prompts that review calibrated; the threshold above for the others")
        target = types.RadioGroup(orientation="horizontal")
        for value, label in TARGETS.items():
            target.add_choice(value, label=label)
        view = _target_view(ctx)
        panel.enum("target", target.values(), label=f"Target ({samples_text(len(view))})", view=target,
                   default=state.get("target"), description=embedded_text(view, state.get("model")))
        panel.bool("embed_all_candidates", label=EMBED_ALL_LABEL, default=bool(state.get("embed_all_candidates")),
                   description=EMBED_ALL_HELP)
        panel.bool("refine_boxes", label=REFINE_LABEL, default=state.get("refine_boxes") is not False,
                   description=REFINE_HELP)
        panel.str("label_field", label="Write detections to", default=state.get("label_field"),
                  on_change=self.on_edit, description=overwrite_note(ctx.dataset, state.get("label_field")))
        panel.btn("run", label="Run detection", on_click=self.on_run, variant="contained")
        if state.get(PANEL_STATUS):
            panel.md(state.get(PANEL_STATUS), name=PANEL_STATUS)

        panel.md("**Inspect**", name="inspect_header")
        fields = types.Dropdown(label="Field")
        for name in detection_fields(ctx.dataset):
            fields.add_choice(name, label=name)
        panel.enum("inspect_field", fields.values(), view=fields, default=state.get("inspect_field"),
                   on_change=self.on_change_field)
        panel.md(state.get("summary") or NO_RUNS, name="summary")
        if state.get("requeue"):
            panel.btn("requeue", label=f"Requeue {state.get('requeue')} lost or failed shards",
                      on_click=self.on_requeue)
        if state.get("review_report"):
            panel.md("Review of these labels:\n\n" + state.get("review_report"), name="review_report")
        panel.plot("histogram", data=state.get("traces") or [],  # in the view, which each render replaces whole
                   layout={"title": "confidence", "barmode": "overlay", "height": 260, "xaxis": {"range": [0, 1]},
                           "margin": {"t": 30, "b": 30}, "showlegend": True,  # which colour is which prompt
                           "legend": {"orientation": "h", "x": 0, "y": 1.15}})

        panel.md("**Act**", name="act_header")
        slider = float(state.get("slider") if state.get("slider") is not None else 0.5)
        panel.float("slider", label="Confidence", min=0, max=1, default=state.get("slider"), on_change=self.on_slider,
                    view=types.SliderView(componentsProps={  # the value is in the labels below, rounded
                        "slider": {"min": 0, "max": 1, "step": 0.05, "valueLabelDisplay": "off"}}))
        direction = types.RadioGroup(orientation="horizontal")
        direction.add_choice("above", label=f"show labels at/above {slider:.2f}")
        direction.add_choice("below", label=f"show labels below {slider:.2f}")
        panel.enum("direction", direction.values(), view=direction, default=state.get("direction"),
                   on_change=self.on_slider)
        for index, prompt in enumerate(state.get("heatmap_prompts") or []):
            panel.btn(f"heatmap_{index}", label=f"Show heatmap: {prompt}", on_click=self.on_show_heatmap,
                      params={"prompt": prompt})
        if state.get("candidates"):
            panel.btn("candidate_patches", label="Look at the candidates as patches, best first",
                      on_click=self.on_candidate_patches)
        panel.btn("tag", label=f"Tag labels below {slider:.2f} '{REVIEW_TAG}'", on_click=self.on_tag)
        panel.btn("clear", label="Clear filter", on_click=self.on_clear)
        self.render_review(ctx, panel)
        self.render_find(ctx, panel)
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=1, padding=2))


def open_panel(session: fo.Session) -> None:
    """Show the samples grid and the CLIP zero-shot panel side by side in ``session``'s App.

    Args:
        session: what ``fo.launch_app`` returned.
    """
    def tab(panel: fo.Panel) -> fo.Space:  # a space showing one panel, its tab active
        return fo.Space(children=[panel], active_child=panel.component_id)

    session.spaces = fo.Space(orientation="horizontal", children=[
        tab(fo.Panel(type="Samples", pinned=True)), tab(fo.Panel(type=PANEL_NAME))])


def _target_view(ctx):
    target = ctx.panel.state.get("target") or "CURRENT_VIEW"
    if target == "SELECTED_SAMPLES" and ctx.selected:
        return ctx.dataset.select(ctx.selected)
    if target == "DATASET" or ctx.view is None:
        return ctx.dataset.view()
    return ctx.view


def embedded_text(view: fo.core.collections.SampleCollection, model: str | None) -> str:
    """"Embedded: 48 of 50 samples …" when earlier runs stored the target's crops under ``model``
    (a rerun with new prompts reads them back); "" when none, or past ``EMBEDDED_COUNT_MAX`` samples."""
    if not model or len(view) > EMBEDDED_COUNT_MAX:
        return ""
    count = open_store(True).embedded(view.values("filepath"), model)
    if not count:
        return ""
    return (f"Embedded: {count} of {samples_text(len(view))} under `{model}`; new prompts on them read their crops "
            "from the store")


def samples_text(count: int) -> str:
    """"1 sample", "2 samples"."""
    return f"{count} sample{'' if count == 1 else 's'}"


def raised_message(error: str | None) -> str:
    """The message of the exception a failed run raised, whole, from the traceback the App hands
    the panel (a message may span lines; the traceback's last line alone can miss its point)."""
    lines = str(error or "").strip().splitlines()
    starts = [i for i, line in enumerate(lines) if RAISED.match(line)]
    if not starts:
        return lines[-1].strip() if lines else "unknown error"
    return RAISED.sub("", " ".join(line.strip() for line in lines[starts[-1]:]), count=1)


def _prompts_markdown(text: str | None) -> str:
    prompts = list(dict.fromkeys(parse_prompts(text)))
    if not prompts:
        return "No prompts yet."
    return f"Will look for {len(prompts)}: " + " · ".join(f"`{p}`" for p in prompts)


def _summary_markdown(stats, run: DetectRun | None, shards: str | None = None) -> str:
    if shards:  # a sharded run: where its shards stand, then what they have labelled so far
        return "```\n" + shards + "\n```\n\n" + (_summary_markdown(stats, run) if stats else "")
    if not stats:
        return NO_RUNS
    rows = ["| prompt | detections | samples | mean confidence |", "| --- | ---: | ---: | ---: |"]
    for item in stats:
        mean = sum(item.confidences) / len(item.confidences) if item.confidences else 0.0
        rows.append(f"| {item.prompt} | {item.detections} | {item.samples} | {mean:.2f} |")
    if run:
        rows.append(f"\nRun: `{run.model}` on {run.device}, method `{run.method}`, "
                    f"threshold {run.options.get('confidence_thresh')}, run id `{run.run_id}`")
    return "\n".join(rows)
