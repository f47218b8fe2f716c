"""Read a detections field back for people: per-prompt counts and confidences, the run that made
it, confidence-filtered views and the fields to show for one prompt (what the App panel displays)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import fiftyone as fo
from fiftyone import ViewField as F

from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun, plugin_fields


@dataclass
class PromptStats:
    """One prompt (label) of a detections field."""

    prompt: str
    detections: int
    samples: int  # samples with at least one detection of the prompt
    confidences: list[float] = field(default_factory=list)
    heatmap_field: str | None = None


def detection_fields(samples: fo.core.collections.SampleCollection) -> list[str]:
    """The collection's ``fo.Detections`` fields: those written by this plugin first, newest run
    first (``plugin_fields``), then the others by name."""
    fields = sorted(samples.get_field_schema(embedded_doc_type=fo.Detections))
    ours = plugin_fields(samples)
    return [*ours, *(name for name in fields if name not in ours)]


def prompt_stats(
    samples: fo.core.collections.SampleCollection, label_field: str, run: DetectRun | None = None
) -> list[PromptStats]:
    """Counts and confidences per label of ``label_field``, in the order the run prompted them
    (``run``: the field's record when the caller has already read it)."""
    labels = samples.values(f"{label_field}.detections.label")
    confidences = samples.values(f"{label_field}.detections.confidence")
    run = run or DetectRun.load(samples, label_field)
    prompts, heatmaps = (run.prompts, run.heatmap_of) if run else ([], {})
    found = sorted({label for sample in labels for label in sample or []} - set(prompts))
    stats = {p: PromptStats(p, 0, 0, heatmap_field=heatmaps.get(p)) for p in [*prompts, *found]}
    for sample_labels, sample_confidences in zip(labels, confidences):
        for label in set(sample_labels or []):
            stats[label].samples += 1
        for label, confidence in zip(sample_labels or [], sample_confidences or []):
            stats[label].detections += 1
            if confidence is not None:
                stats[label].confidences.append(float(confidence))
    return list(stats.values())


def confidence_view(
    samples: fo.core.collections.SampleCollection, label_field: str, threshold: float, above: bool = True
) -> fo.DatasetView:
    """Samples with labels of ``label_field`` at/above (or below) ``threshold``, showing only those labels."""
    condition = F("confidence") >= threshold if above else F("confidence") < threshold
    return samples.filter_labels(label_field, condition)


def calibrated_view(
    samples: fo.core.collections.SampleCollection, label_field: str, thresholds: dict[str, float]
) -> fo.DatasetView:
    """Samples with labels of ``label_field`` at/above their prompt's threshold (``thresholds``:
    prompt → threshold, e.g. a run's calibrated ones), showing only those labels."""
    kept = [(F("label") == prompt) & (F("confidence") >= threshold) for prompt, threshold in thresholds.items()]
    return samples.filter_labels(label_field, F.any(kept) if len(kept) > 1 else kept[0])


def fields_to_show(samples: fo.core.collections.SampleCollection, label_field: str, prompt: str) -> list[str]:
    """The detections field plus ``prompt``'s heatmap field (other heatmaps hidden)."""
    run = DetectRun.load(samples, label_field)
    heatmap = run.heatmap_of.get(prompt) if run else None
    return [label_field, *([heatmap] if heatmap else [])]


def histogram_traces(stats: list[PromptStats], bins: int = 20) -> list[dict[str, Any]]:
    """Plotly bar traces: the confidence histogram of each prompt over ``bins`` bins of [0, 1]."""
    traces = []
    for item in stats:
        counts = Counter(min(int(c * bins), bins - 1) for c in item.confidences)
        traces.append({
            "type": "bar",
            "name": item.prompt,
            "x": [(b + 0.5) / bins for b in range(bins)],
            "y": [counts.get(b, 0) for b in range(bins)],
        })
    return traces


def busiest_field(samples: fo.core.collections.SampleCollection) -> str | None:
    """The field of this plugin's runs that labels the most samples (the newest on a tie), or None:
    what a person most likely wants to inspect first (the demo's field, not a two-sample try)."""
    ours = plugin_fields(samples)
    return max(ours, key=lambda name: samples.count(name)) if ours else None


def unused_field_name(samples: fo.core.collections.SampleCollection, base: str = "clip_detections") -> str:
    """``base``, or ``base_2``, ``base_3``, ... : the first name no field of ``samples`` uses yet."""
    schema = samples.get_field_schema()
    name, suffix = base, 1
    while name in schema:
        suffix += 1
        name = f"{base}_{suffix}"
    return name


def overwrite_note(samples: fo.core.collections.SampleCollection, label_field: str) -> str:
    """What a run writing ``label_field`` would replace, in one line ("" when the field is new)."""
    existing = samples.get_field_schema().get(label_field) if label_field else None
    if existing is None:
        return ""
    if getattr(existing, "document_type", None) is not fo.Detections:
        return f"`{label_field}` holds another kind of field: a run into it is refused. Choose another name."
    run = DetectRun.load(samples, label_field)
    holds = f"run `{run.run_id}` ({', '.join(run.prompts)})" if run else "labels no run of this plugin wrote"
    return (f"`{label_field}` already holds {holds} on {samples.count(label_field)} samples: a run replaces them on "
            "the target's samples. Choose another name to keep them.")
