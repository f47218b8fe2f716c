"""App operators: forms only. The work is ``fiftyone_clip_zeroshot.labeling.detect.DetectJob``.

``detect`` params (also for ``fiftyone.operators.execute_operator``): ``prompts`` (list of str),
``method`` ("sliding_window" | "occlusion"), ``model`` (hub id, folder or "shapes-world"),
``label_field``, ``heatmaps`` (bool), ``confidence_thresh`` (0..1), ``batch_size``, ``device``
("auto" | "cuda" | "cpu"), ``skip_existing`` (bool), ``delegate`` (bool) and the system
``view_target`` ("DATASET" | "CURRENT_VIEW" | "SELECTED_SAMPLES").
"""

from __future__ import annotations

import time

import fiftyone as fo
import fiftyone.operators as foo
import fiftyone.operators.types as types

from fiftyone_clip_zeroshot.core.model import DEFAULT_MODEL, PACKAGED_MODELS, ModelLoadError
from fiftyone_clip_zeroshot.core.options import METHODS, OptionsError
from fiftyone_clip_zeroshot.labeling.detect import DetectError, DetectJob

DELEGATE_ABOVE = 25  # samples; larger targets default to delegated execution
SUGGESTED_MODELS = [DEFAULT_MODEL, "openai/clip-vit-base-patch16", "openai/clip-vit-large-patch14", *PACKAGED_MODELS]
USER_ERRORS = (OptionsError, DetectError, ModelLoadError)


class DetectWithClip(foo.Operator):
    """Zero-shot detection of typed prompts with CLIP over a dataset, view or selection."""

    @property
    def config(self) -> foo.OperatorConfig:
        return foo.OperatorConfig(
            name="detect",
            label="CLIP zero-shot: detect objects",
            description="Localize text prompts with CLIP sliding windows or occlusion; writes detections and heatmaps",
            dynamic=True,
            execute_as_generator=True,
            allow_immediate_execution=True,
            allow_delegated_execution=True,
        )

    def resolve_input(self, ctx) -> types.Property:
        inputs = types.Object()
        _detect_inputs(ctx, inputs)
        return types.Property(inputs, view=types.View(label="CLIP zero-shot detection"))

    def resolve_delegation(self, ctx) -> bool:
        delegate = ctx.params.get("delegate")
        return bool(delegate) if delegate is not None else len(ctx.target_view()) > DELEGATE_ABOVE

    def execute(self, ctx):
        """Delegated runs return their summary (kept with the operation); immediate runs stream
        progress to the App and end with a notification and the summary as output."""
        try:
            job = DetectJob(
                ctx.target_view(),
                ctx.params.get("prompts") or [],
                method=ctx.params.get("method", "sliding_window"),
                model=ctx.params.get("model") or DEFAULT_MODEL,
                label_field=ctx.params.get("label_field", "clip_detections"),
                heatmaps=ctx.params.get("heatmaps", True),
                device=None if ctx.params.get("device", "auto") == "auto" else ctx.params["device"],
                skip_existing=ctx.params.get("skip_existing", False),
                confidence_thresh=ctx.params.get("confidence_thresh"),
                batch_size=ctx.params.get("batch_size"),
            )
        except USER_ERRORS as error:
            raise ValueError(str(error)) from None
        if ctx.delegated:
            done = 0
            for done, total in job.steps():
                ctx.set_progress(progress=done / total, label=f"{done}/{total} samples")
            return _summary(job, done)
        return self._run_immediately(ctx, job)

    def _run_immediately(self, ctx, job: DetectJob):
        deadline = time.monotonic() + 0.8 * fo.config.operator_timeout
        done = 0
        for done, total in job.steps():
            yield ctx.ops.set_progress(progress=done / total, label=f"{done}/{total} samples")
            if time.monotonic() > deadline and done < total:
                yield ctx.ops.reload_dataset()
                raise TimeoutError(
                    f"stopped after {done} of {total} samples, close to the {fo.config.operator_timeout}s limit of "
                    "immediate runs; labels so far are saved. Rerun with 'skip existing' or schedule it (delegate)."
                )
        yield ctx.ops.reload_dataset()
        summary = _summary(job, done)
        yield ctx.ops.notify(summary["message"], variant="warning" if job.failures else "success")
        yield ctx.ops.show_output(self.resolve_output(ctx).to_json(), summary)

    def resolve_output(self, ctx) -> types.Property:
        outputs = types.Object()
        outputs.str("message", label="Result")
        outputs.list("fields", types.String(), label="Fields written")
        outputs.int("samples", label="Samples processed")
        outputs.int("failed", label="Samples that failed (left without labels)")
        outputs.list("failures", types.String(), label="Failures (sample id: error)")
        return types.Property(outputs)


def _summary(job: DetectJob, done: int) -> dict:
    failures = [f"{sample_id}: {message}" for sample_id, message in job.failures.items()]
    message = f"labelled {done - len(failures)} of {job.total} samples into {job.label_field!r}"
    if failures:
        message += f"; {len(failures)} failed and were left without labels (see failures)"
    return {"message": message, "fields": job.fields, "samples": done, "failed": len(failures), "failures": failures}


def _detect_inputs(ctx, inputs: types.Object) -> None:
    target = ctx.target_view()
    inputs.list("prompts", types.String(), required=True, label="Prompts",
                description="What to find, one prompt per entry, e.g. 'a fluffy cat'")
    method = types.RadioGroup()
    method.add_choice("sliding_window", label="Sliding window", description="Score windows at several scales; best boxes")
    method.add_choice("occlusion", label="Occlusion", description="Hide patches; where the score drops is the object")
    inputs.enum("method", method.values(), default=METHODS[0], label="Method", view=method)
    models = types.AutocompleteView()
    for name in SUGGESTED_MODELS:
        models.add_choice(name, label=name)
    inputs.str("model", default=DEFAULT_MODEL, label="CLIP model", view=models,
               description="Hugging Face id, local folder, or 'shapes-world' (the offline demo model)")
    inputs.str("label_field", default="clip_detections", required=True, label="Detections field")
    inputs.bool("heatmaps", default=True, label="Store heatmaps", description="One heatmap field per prompt")
    inputs.float("confidence_thresh", min=0.0, max=1.0, label="Confidence threshold",
                 description="Empty: the method's default (0.6 sliding window, 0.5 occlusion)")
    inputs.int("batch_size", default=256, min=1, label="Batch size", description="Windows per forward pass")
    device = types.Dropdown()
    for choice in ("auto", "cuda", "cpu"):
        device.add_choice(choice, label=choice)
    inputs.enum("device", device.values(), default="auto", label="Device", view=device)
    inputs.bool("skip_existing", default=False, label="Skip samples that already have detections")
    count = len(target)
    inputs.bool("delegate", default=count > DELEGATE_ABOVE, label="Delegate (run in the background)",
                description=f"{count} samples. Immediate runs stop near the {fo.config.operator_timeout}s operator "
                            "timeout; delegate large jobs and run them with `fiftyone delegated launch`.")


def register(plugin) -> None:
    plugin.register(DetectWithClip)
