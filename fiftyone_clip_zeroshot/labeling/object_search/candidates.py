"""``fz.propose`` over a collection: every image's class-agnostic candidate boxes as ``fo.Detections``.

The candidates are what every localizer reads (``core.geometry.regions``), found without weights and before
any prompt; each gets the prompt-free ``objectness`` prior as its confidence, and they are stored
best first. Indexed by text (``labeling.object_search.index``), they make objects searchable across a dataset.
"""

from __future__ import annotations

from typing import Any

import fiftyone as fo
import numpy as np
import torch

from fiftyone_clip_zeroshot.core.geometry.objectness import objectness
from fiftyone_clip_zeroshot.core.geometry.regions import candidate_boxes
from fiftyone_clip_zeroshot.core.options import LocalizeOptions
from fiftyone_clip_zeroshot.labeling.fo_private import declare_fields
from fiftyone_clip_zeroshot.labeling.runs.jobs import (
    LabelingError,
    Progress,
    SampleJob,
    check_field_name,
    check_target,
    run_job,
)
from fiftyone_clip_zeroshot.labeling.runs.labels import to_candidates

DEFAULT_CANDIDATES_FIELD = "candidates"


class ProposeJob(SampleJob):
    """Candidate boxes per image (see ``propose``); runs on the CPU and needs no model."""

    def __init__(self, samples: fo.core.collections.SampleCollection, label_field: str = DEFAULT_CANDIDATES_FIELD,
                 skip_failures: bool = True, **options: Any):
        self.options = LocalizeOptions.create(**options)
        self.label_field = check_field_name(label_field)
        self.skip_failures = skip_failures
        check_target(samples, {self.label_field: fo.Detections})
        indexed = [key for key in samples.list_brain_runs()
                   if getattr(samples.get_brain_info(key).config, "patches_field", None) == self.label_field]
        if indexed:
            raise LabelingError(f"{self.label_field!r} is indexed by brain run {indexed[0]!r}, whose patches new "
                                f"candidates would replace; delete it first (dataset.delete_brain_run({indexed[0]!r})) "
                                "or choose another label_field")
        self.samples = samples
        super().__init__()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def start(self) -> None:
        declare_fields(self.samples, {self.label_field: fo.Detections})

    def labels(self, sample: fo.Sample, pixels: torch.Tensor) -> dict[str, fo.Detections]:
        boxes = candidate_boxes(pixels, self.options)
        scores = objectness(pixels, boxes)
        order = np.argsort(-scores, kind="stable")
        return {self.label_field: to_candidates(boxes[order], (int(pixels.shape[2]), int(pixels.shape[1])),
                                                scores[order])}


def propose_samples(
    samples: fo.core.collections.SampleCollection,
    label_field: str = DEFAULT_CANDIDATES_FIELD,
    skip_failures: bool = True,
    progress: Progress = True,
    **options: Any,
) -> None:
    """``fz.propose`` for a dataset or view: each image's candidates as ``fo.Detections`` in
    ``label_field`` (label ``"candidate"``, confidence the prompt-free ``objectness`` prior, best first).

    Args:
        samples: a dataset or view of images.
        label_field: where the candidates go.
        skip_failures: leave samples whose image cannot be read without candidates, and go on.
        progress: True, False or a callback ``(done, total)``.
        **options: ``LocalizeOptions`` fields; the proposal ones count (``proposal_tile``,
            ``proposal_side``, ``proposal_scales``; ``fz.SMALL_OBJECTS`` for crowds of small objects).
    """
    run_job(ProposeJob(samples, label_field, skip_failures, **options), progress)
