"""Real photos: what the candidate stage costs and finds on photos that ship inside packages.

    python benchmarks/photos.py                          # every set, random ViT-B/32 geometry
    python benchmarks/photos.py --sets installed         # only the photos installed with FiftyOne
    python benchmarks/photos.py --model timing           # the full random ViT-B/32: real s/image
    python benchmarks/photos.py --model shapes-world --methods proposals
    python benchmarks/photos.py --sets aerial --small-objects   # tiled proposals for crowds of small objects

Sets (``fiftyone_clip_zeroshot.photos``): ``installed`` (scikit-image, scikit-learn, matplotlib;
hand-drawn boxes), ``packages`` (imgaug's annotated quokka, ultralytics' two photos, hand-drawn)
and ``aerial`` (deepforest's three annotated tiles, 377 tree crowns); the last two are read
from wheels fetched once into a cache, never installed or copied.

Per set and method: images, objects, candidates per image (``fz.propose`` at defaults: the
class-agnostic boxes every method reads), encoder crops per image (224-px forwards counted by a
hook on the vision embeddings, tiles and verification included: the count holds for any
checkpoint of that input size), recall of the candidates at IoU 0.5 and 0.7, and s/image.
The default model, ``geometry``, is a random CLIP with ViT-B/32's input and patches on a
1-layer tower: the same crops in a fraction of the time, so its s/image is not a speed. Occlusion
is left out by default: its cost follows its gate, which random weights open everywhere. Runs
encode every crop (``cache=False``), so each method's count is its own, not what another left in
the embedding store.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import supervision as sv
import torch

from fiftyone_clip_zeroshot import load_model, localize, propose
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.core.models.model import default_device
from fiftyone_clip_zeroshot.core.options import SMALL_OBJECTS
from fiftyone_clip_zeroshot.photos import PHOTO_SETS, Photo

PROMPTS = ["a photo of a person", "a photo of a cat"]
_spec = importlib.util.spec_from_file_location("speed", Path(__file__).with_name("speed.py"))
speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speed)

COLUMNS = (f"{'set':<10} {'method':<15} {'images':>6} {'objects':>7} {'candidates':>10} {'crops':>7} "
           f"{'recall@.5':>9} {'recall@.7':>9} {'s/image':>8}")


def recall(candidates: np.ndarray, truth: np.ndarray, iou: float) -> int:
    """How many ``truth`` boxes some candidate overlaps at ``iou`` or more."""
    if len(candidates) == 0 or len(truth) == 0:
        return 0
    return int((sv.box_iou_batch(truth, candidates).max(1) >= iou).sum())


def measure(photos: list[Photo], clip, method: str, meter, options: dict) -> dict[str, float]:
    """One row's figures over ``photos`` at ``options``."""
    objects = found50 = found70 = candidates = 0
    crops = seconds = 0.0
    for photo in photos:
        boxes = propose(photo.image, **options)
        candidates += len(boxes)
        objects += len(photo.boxes)
        found50 += recall(boxes, photo.boxes, 0.5)
        found70 += recall(boxes, photo.boxes, 0.7)
        meter.tokens = 0
        start = time.perf_counter()
        localize(photo.image, PROMPTS, clip, method=method, cache=False, **options)
        seconds += time.perf_counter() - start
        crops += meter.forwards
    n = len(photos)
    return dict(images=n, objects=objects, candidates=candidates / n, crops=crops / n,
                recall50=found50 / max(objects, 1), recall70=found70 / max(objects, 1), seconds=seconds / n)


def row(set_name: str, method: str, figures: dict[str, float]) -> str:
    f = figures
    return (f"{set_name:<10} {method:<15} {f['images']:>6} {f['objects']:>7} {f['candidates']:>10.0f} "
            f"{f['crops']:>7.0f} {f['recall50']:>9.3f} {f['recall70']:>9.3f} {f['seconds']:>8.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=list(PHOTO_SETS), choices=list(PHOTO_SETS))
    parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m != "occlusion"], choices=METHODS)
    parser.add_argument("--model", default="geometry",
                        help="geometry (default), timing (full random ViT-B/32) or a packaged model / CLIP folder")
    parser.add_argument("--images", type=int, default=None, help="at most this many photos per set")
    parser.add_argument("--small-objects", action="store_true", help="with SMALL_OBJECTS (tiled proposals)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    options = SMALL_OBJECTS if args.small_objects else {}

    device = torch.device(args.device) if args.device else default_device()
    if args.model in ("geometry", "timing"):
        clip = speed.random_vit_b32(device, geometry_only=args.model == "geometry")[0]
    else:
        clip = load_model(args.model, device=device)
    meter = speed.EncoderMeter(clip)
    print(f"# photos — {date.today()}, {platform.processor() or platform.machine()} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}, model {clip.name} "
          f"({clip.image_size} px), {len(PROMPTS)} prompts, {options or 'defaults'}")
    print("# candidates: fz.propose per image; crops: encoder forwards per image (tiles and verification "
          "included); recall of the candidates at IoU 0.5 / 0.7\n")
    print(COLUMNS)
    print("-" * len(COLUMNS))
    for set_name in args.sets:
        photos = PHOTO_SETS[set_name]()[: args.images]
        for method in args.methods:
            print(row(set_name, method, measure(photos, clip, method, meter, options)), flush=True)


if __name__ == "__main__":
    main()
