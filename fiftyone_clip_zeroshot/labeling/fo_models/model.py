"""The localizers as a ``fiftyone.core.models.Model``, so ``dataset.apply_model`` works out of the box.

This one decodes each image itself; ``loader.LoaderClipZeroShotModel`` decodes in DataLoader
workers, and ``factory.zero_shot_model`` picks the one that works here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fiftyone as fo
import fiftyone.core.models as fom
import torch

from fiftyone_clip_zeroshot.core.geometry.images import load_image
from fiftyone_clip_zeroshot.core.localize import localize_batch
from fiftyone_clip_zeroshot.core.models.model import DEFAULT_MODEL, ClipModel
from fiftyone_clip_zeroshot.core.options import LocalizeOptions, check_prompts
from fiftyone_clip_zeroshot.labeling.fo_models.image_model import ImageModel
from fiftyone_clip_zeroshot.labeling.runs.jobs import resolve_model
from fiftyone_clip_zeroshot.labeling.runs.labels import to_detections


class ClipZeroShotModel(fom.SamplesMixin, ImageModel):
    """Full-resolution zero-shot detection of ``prompts``; predicts ``fo.Detections`` per image.

    Images are decoded from their file (EXIF orientation applied, 16-bit and palette images
    converted, as in ``detect()``). ``fz.zero_shot_model`` gives the DataLoader variant where
    FiftyOne's torch utilities import:

        model = fz.zero_shot_model(["red circle", "blue star"], model="shapes-world")
        dataset.apply_model(model, label_field="clip", batch_size=4, num_workers=2)
    """

    def __init__(
        self,
        prompts: str | Sequence[str],
        method: str = "sliding_window",
        model: str | ClipModel = DEFAULT_MODEL,
        device: str | None = None,
        **options: Any,
    ):
        fom.SamplesMixin.__init__(self)
        self.prompts = check_prompts(prompts)
        options = LocalizeOptions.create(method=method, **options)
        self.clip = resolve_model(model, device)
        self.options = options.for_model(self.clip)

    @property
    def ragged_batches(self) -> bool:
        """False, so that ``apply_model(batch_size=B)`` hands B images at once (FiftyOne 1.22 drops
        ``batch_size`` for a ragged model); ``predict_all`` takes a list of images of any sizes,
        and the DataLoader variant collates its batch as that list."""
        return False

    def predict(self, arg: Any, sample: fo.Sample | None = None) -> fo.Detections:
        """Detections in one image: a decoded ``(3, H, W)`` uint8 tensor (from a DataLoader
        worker), else the sample's file, else the array FiftyOne passes."""
        return self.predict_all([arg], [sample])[0]

    def predict_all(self, args: Sequence[Any], samples: Sequence[fo.Sample] | None = None) -> list[fo.Detections]:
        """Detections in each image of a batch (``apply_model(batch_size=...)``), localized
        together (``localize_batch``); an image that fails raises, as FiftyOne expects."""
        samples = samples or [None] * len(args)
        images = [self._pixels(arg, sample) for arg, sample in zip(args, samples)]
        outcomes = localize_batch(images, self.prompts, self.clip, self.options)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                raise outcome
        return [to_detections(results, (int(pixels.shape[2]), int(pixels.shape[1])), self.options.method)
                for pixels, results in zip(images, outcomes)]

    def _pixels(self, arg: Any, sample: fo.Sample | None) -> torch.Tensor:
        pixels = arg if isinstance(arg, torch.Tensor) else load_image(sample.filepath if sample is not None else arg)
        return pixels.to(self.clip.device, non_blocking=True)
