"""``ClipZeroShotModel`` on FiftyOne's DataLoader path; imported only where
``fiftyone.utils.torch`` imports (it needs torchvision)."""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import fiftyone as fo
import fiftyone.core.models as fom
import fiftyone.utils.torch as fout
import torch

from fiftyone_clip_zeroshot.core.geometry.images import load_image
from fiftyone_clip_zeroshot.labeling.fo_models.model import ClipZeroShotModel

logger = logging.getLogger(__name__)


class Decoded(NamedTuple):
    """One image decoded in a DataLoader worker, with the id of the sample it belongs to."""

    sample_id: str
    pixels: torch.Tensor


class DecodeImage(fout.GetItem):
    """Runs in a DataLoader worker: one sample's file → its ``(3, H, W)`` uint8 pixels and its id."""

    @property
    def required_keys(self) -> list[str]:
        return ["id", "filepath"]

    def __call__(self, d: dict) -> Decoded:
        return Decoded(str(d["id"]), load_image(d["filepath"]))


class LoaderClipZeroShotModel(fom.SupportsGetItem, fom.TorchModelMixin, ClipZeroShotModel):
    """``ClipZeroShotModel`` whose images are decoded by ``DecodeImage`` in DataLoader workers;
    each batch (a list: images differ in size) goes to ``predict_all``."""

    @property
    def has_collate_fn(self) -> bool:
        return True

    @staticmethod
    def collate_fn(batch: list[Decoded]) -> list[Decoded]:
        """A batch as the list of its decoded images (of any sizes), for ``predict_all``."""
        return list(batch)

    def build_get_item(self, field_mapping: dict | None = None) -> DecodeImage:
        return DecodeImage(field_mapping=field_mapping)

    @property
    def _using_gpu(self) -> bool:
        return self.clip.device.type == "cuda"

    def _pixels(self, arg: Any, sample: fo.Sample | None) -> torch.Tensor:
        """The decoded image, if it is ``sample``'s. FiftyOne pairs the loader's images (read from a
        snapshot of the view) with the samples of its iteration by position, which a resumed
        iteration of a view that the run shrinks shifts: then the sample's own file is decoded."""
        if isinstance(arg, Decoded):
            if sample is not None and sample.id != arg.sample_id:
                logger.warning("sample %s was paired with the image of sample %s; decoding its own", sample.id,
                               arg.sample_id)
                arg = sample.filepath
            else:
                arg = arg.pixels
        return super()._pixels(arg, sample)
