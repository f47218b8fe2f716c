"""What our FiftyOne models share: images in, decoded by the model itself from whatever FiftyOne
passes (a path, an array or a PIL image), in batches of any image sizes."""

from __future__ import annotations

import fiftyone.core.models as fom


class ImageModel(fom.Model):
    """A ``fom.Model`` over images of any sizes that does its own decoding (no FiftyOne transforms)."""

    _preprocess = False

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
