"""The localizers as a ``fiftyone.core.models.Model``, so ``dataset.apply_model`` works out of the box."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fiftyone as fo
import fiftyone.core.models as fom

from fiftyone_clip_zeroshot.core.images import load_image
from fiftyone_clip_zeroshot.core.localize import localize_tensor
from fiftyone_clip_zeroshot.core.model import DEFAULT_MODEL, ClipModel
from fiftyone_clip_zeroshot.core.options import LocalizeOptions, check_prompts
from fiftyone_clip_zeroshot.labeling.jobs import resolve_model
from fiftyone_clip_zeroshot.labeling.labels import to_detections


class ClipZeroShotModel(fom.SamplesMixin, fom.Model):
    """Full-resolution zero-shot detection of ``prompts``; predicts ``fo.Detections`` per image.

    With a sample at hand it decodes ``sample.filepath`` itself (EXIF orientation applied, as in
    ``detect()``); otherwise it takes the HWC uint8 array FiftyOne passes.

        model = ClipZeroShotModel(["red circle", "blue star"], model="shapes-world")
        dataset.apply_model(model, label_field="clip")
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
        self.options = LocalizeOptions.create(method=method, **options)
        self.clip = resolve_model(model, device)
        self._preprocess = False

    @property
    def media_type(self) -> str:
        return "image"

    @property
    def ragged_batches(self) -> bool:
        return True

    @property
    def transforms(self) -> None:
        return None

    @property
    def preprocess(self) -> bool:
        return self._preprocess

    @preprocess.setter
    def preprocess(self, value: bool) -> None:
        self._preprocess = value

    def predict(self, arg: Any, sample: fo.Sample | None = None) -> fo.Detections:
        pixels = load_image(sample.filepath if sample is not None else arg).to(self.clip.device)
        results = localize_tensor(pixels, self.prompts, self.clip, self.options)
        return to_detections(results, (int(pixels.shape[2]), int(pixels.shape[1])), self.options.method)

    def predict_all(self, args: Sequence[Any], samples: Sequence[fo.Sample] | None = None) -> list[fo.Detections]:
        samples = samples or [None] * len(args)
        return [self.predict(arg, sample) for arg, sample in zip(args, samples)]
