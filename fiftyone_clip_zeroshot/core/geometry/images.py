"""Decode any image input once into an RGB uint8 ``(3, H, W)`` tensor, oriented as it is displayed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from fiftyone_clip_zeroshot.core.errors import ClipZeroShotError

ImageInput = str | Path | Image.Image | np.ndarray | torch.Tensor


class ImageLoadError(ClipZeroShotError, ValueError):
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
        except Image.DecompressionBombError as error:
            raise ImageLoadError(
                f"cannot read image {str(image)!r}: {error}. If you trust the file, raise "
                "PIL.Image.MAX_IMAGE_PIXELS (or set it to None) before running"
            ) from error
        except (OSError, SyntaxError, ValueError) as error:
            raise ImageLoadError(f"cannot read image {str(image)!r}: {error}") from error
    if isinstance(image, Image.Image):
        return _from_pil(image)
    if isinstance(image, np.ndarray):
        return _from_array(torch.from_numpy(np.array(image, copy=True)), channels_last=True)
    if isinstance(image, torch.Tensor):
        return _from_array(image, channels_last=False)
    raise TypeError(f"unsupported image type {type(image).__name__}; pass a path, PIL image, numpy array or tensor")


def _from_pil(img: Image.Image) -> torch.Tensor:
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I"):  # 16/32-bit integer gray: map 0..65535 to 0..255, as browsers show it
        array = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or array.max() > 255:
            array = array / 257
        img = Image.fromarray(np.clip(np.round(array), 0, 255).astype(np.uint8))
    if img.mode == "RGBA" or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1).contiguous()


def _from_array(array: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Arrays follow their library's convention when both readings fit (numpy HWC, torch CHW),
    so a one-pixel-high ``(1, W, 3)`` strip is not mistaken for a one-channel image."""
    if array.ndim == 2:
        array = array[None].expand(3, -1, -1)
    elif array.ndim == 3:
        last, first = array.shape[-1] in (1, 3, 4), array.shape[0] in (1, 3, 4)
        if last and (channels_last or not first):
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
