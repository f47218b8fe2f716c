"""Images localized one by one vs together: images/s for ``image_batch_size`` 1 vs 8, one table.

    python benchmarks/batching.py                        # CPU: shipped model and random ViT-B/32
    python benchmarks/batching.py --device cuda          # a GPU: the random ViT-B/32 in fp16
    python benchmarks/batching.py --images 8 --smoke     # seconds-long run

Scenes of the shapes world at 320x240 and 640x480, 2 prompts, one method (default
``proposals``, the cheapest at defaults), localized through ``localize_batch`` straight from
decoded tensors (no database), after one warm-up batch. Every batched image's results are
checked against its one-by-one results (they must agree to 1e-5). The random ViT-B/32 is the
one of ``speed.py`` (weights do not change speed).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from fiftyone_clip_zeroshot import load_model
from fiftyone_clip_zeroshot.core.geometry.images import load_image
from fiftyone_clip_zeroshot.core.localize import localize_batch
from fiftyone_clip_zeroshot.core.models.model import default_device
from fiftyone_clip_zeroshot.core.options import LocalizeOptions
from fiftyone_clip_zeroshot.shapes.world import render_scene

PROMPTS = ["a photo of a red circle", "a photo of a blue square"]
_spec = importlib.util.spec_from_file_location("speed", Path(__file__).with_name("speed.py"))
speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speed)


def images_per_second(images, model, opts, batch: int) -> tuple[float, list]:
    """Images/s localizing ``images`` ``batch`` at a time, and the results."""
    localize_batch(images[:batch], PROMPTS, model, opts)  # warm-up
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    results = []
    for first in range(0, len(images), batch):
        results += localize_batch(images[first:first + batch], PROMPTS, model, opts)
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return len(images) / (time.perf_counter() - start), results


def same(a: list, b: list, atol: float = 1e-5) -> bool:
    return all(np.allclose(x.heatmap, y.heatmap, atol=atol) and np.allclose(x.detections.xyxy, y.detections.xyxy,
               atol=atol) and np.allclose(x.detections.confidence, y.detections.confidence, atol=atol)
               for one, many in zip(a, b) for x, y in zip(one, many))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--method", default="proposals")
    parser.add_argument("--smoke", action="store_true", help="the shipped model only")
    args = parser.parse_args()
    device = torch.device(args.device) if args.device else default_device()
    models = [load_model("shapes-world", device=device)]
    if not args.smoke:
        models.append(speed.random_vit_b32(device)[0])
    opts = LocalizeOptions.create(method=args.method, cache=False)
    print(f"| model | images | 1 at a time (images/s) | {args.batch} together (images/s) | ratio | same results |")
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for model in models:
        for width, height in ((320, 240), (640, 480)):
            images = [load_image(np.asarray(render_scene(3, i, width, height).image)).to(device)
                      for i in range(args.images)]
            one, single = images_per_second(images, model, opts, 1)
            many, batched = images_per_second(images, model, opts, args.batch)
            print(f"| {model.name} ({model.dtype}) | {args.images} × {width}×{height} | {one:.2f} | {many:.2f} | "
                  f"{many / one:.2f}× | {'yes' if same(single, batched) else 'NO'} |", flush=True)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(f"\n`python benchmarks/batching.py`, method {args.method}, {where}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {platform.python_version()}, {date.today()}")


if __name__ == "__main__":
    main()
