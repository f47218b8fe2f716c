"""``ClipZeroShotModel`` on FiftyOne's DataLoader path; imported only where
``fiftyone.utils.torch`` imports (it needs torchvision)."""

from __future__ import annotations

import fiftyone.core.models as fom
import fiftyone.utils.torch as fout
import torch

from fiftyone_clip_zeroshot.core.images import load_image
from fiftyone_clip_zeroshot.labeling.model import ClipZeroShotModel


class DecodeImage(fout.GetItem):
    """Runs in a DataLoader worker: one sample's file → its ``(3, H, W)`` uint8 pixels."""

    @property
    def required_keys(self) -> list[str]:
        return ["filepath"]

    def __call__(self, d: dict) -> torch.Tensor:
        return load_image(d["filepath"])


class LoaderClipZeroShotModel(fom.SupportsGetItem, fom.TorchModelMixin, ClipZeroShotModel):
    """``ClipZeroShotModel`` whose images are decoded by ``DecodeImage`` in DataLoader workers;
    each batch (a list: images differ in size) goes to ``predict_all``."""

    def build_get_item(self, field_mapping: dict | None = None) -> DecodeImage:
        return DecodeImage(field_mapping=field_mapping)

    @property
    def _using_gpu(self) -> bool:
        return self.clip.device.type == "cuda"
