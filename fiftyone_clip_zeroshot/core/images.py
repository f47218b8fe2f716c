"""Decode any image input once into an RGB uint8 ``(3, H, W)`` tensor, oriented as it is displayed."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image, ImageOps

ImageInput = Union[str, Path, Image.Image, np.ndarray, torch.Tensor]


class ImageLoadError(ValueError):
    """The image could not be read or decoded."""


def load_image(image: ImageInput) -> torch.Tensor:
    """Path, PIL image, ``(H, W[, C])`` array or ``(3, H, W)``/``(H, W, 3)`` tensor → uint8 ``(3, H, W)``.

    EXIF orientation is applied (boxes then match the image as FiftyOne shows it); grayscale,
    palette, RGBA, CMYK and 16-bit inputs are converted to 8-bit RGB.
    """
    if isinstance(image, (str, Path)):
        try:
            with Image.open(image) as img:
                return _from_pil(img)
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageLoadError(f"cannot read image {str(image)!r}: {error}") from error
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(torch.from_numpy(np.array(image, copy=True)))
    if isinstance(image, torch.Tensor):
        return _from_array(image)
    raise TypeError(f"unsupported image type {type(image).__name__}; pass a path, PIL image, numpy array or tensor")


def _from_pil(img: Image.Image) -> torch.Tensor:
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(img, dtype=np.float32)
        img = Image.fromarray((array * (255.0 / max(float(array.max()), 1.0))).astype(np.uint8))
    if img.mode == "RGBA" or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous()


def _from_array(array: torch.Tensor) -> torch.Tensor:
    if array.ndim == 2:
        array = array[None].expand(3, -1, -1)
    elif array.ndim == 3 and array.shape[0] not in (1, 3, 4) and array.shape[-1] in (1, 3, 4):
        array = array.permute(2, 0, 1)
    if array.ndim != 3 or array.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected an (H, W), (H, W, C) or (C, H, W) image, got shape {tuple(array.shape)}")
    array = array[:3] if array.shape[0] >= 3 else array.expand(3, -1, -1)
    if array.dtype != torch.uint8:
        array = array.float()
        if array.max() <= 1.0:
            array = array * 255
        array = array.round().clamp(0, 255).to(torch.uint8)
    return array.contiguous()
