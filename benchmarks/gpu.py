"""One table for a lent GPU: every method's cost at its defaults (fp16, a scene and a photo), the
reference per-window loop against ours, and images localized one by one against 8 together.

    bash benchmarks/gpu.sh                           # on a GPU: under 8 minutes, prints the table
    python benchmarks/gpu.py --smoke --device cpu    # seconds: the same rows on tiny inputs (a test runs it)

Models are the random-weight ViT-B/32 and B/16 CLIPs of ``speed.py`` (weights do not change
speed), in float16 on a GPU; the smoke mode uses the 1-layer ViT-B/32 geometry on the CPU.
Occlusion is left out of the method rows, as in ``speed.py --methods``. Every row encodes every
crop (``cache=False``) but the embedding store's: a cold run, then new prompts read from it, and
whether a warm run gives the results of no store within float16's 1e-3. The table says the
device, torch and the date; paste it into docs/speed.md with the GPU's name.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fiftyone_clip_zeroshot import localize
from fiftyone_clip_zeroshot.core.geometry.images import load_image
from fiftyone_clip_zeroshot.core.models.model import default_device
from fiftyone_clip_zeroshot.core.options import LocalizeOptions
from fiftyone_clip_zeroshot.photos import installed_photos
from fiftyone_clip_zeroshot.shapes.world import render_scene

METHODS = ("sliding_window", "proposals", "dense")
PROMPTS = 2


def _benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


speed, batching = _benchmark("speed"), _benchmark("batching")


def method_rows(clip, images: dict[str, Image.Image], **options) -> list[tuple]:
    """Every method at its defaults (but ``options``) on each image: 224-px forwards, s/image and forwards/s."""
    meter = speed.EncoderMeter(clip)
    prompts = speed.PROMPT_POOL[:PROMPTS]
    localize(render_scene(0, 0, 320, 240).image, prompts, clip)  # warm-up
    rows = []
    for label, image in images.items():
        for method in METHODS:
            meter.tokens = 0
            start = time.perf_counter()
            localize(image, prompts, clip, method=method, cache=False, **options)
            speed._sync(clip.device)
            seconds = time.perf_counter() - start
            what = "method at defaults" if not options else "method, fewer windows"
            rows.append((what, clip.name, label, method, f"{meter.forwards:,.0f} forwards", seconds,
                         f"{meter.forwards / seconds:,.0f} forwards/s"))
    return rows


def reference_rows(clip, processor, size: tuple[int, int], patch: int) -> list[tuple]:
    """The per-window reference loop against our sliding window on the same window grid."""
    image = render_scene(0, 0, *size).image
    window = 6 * patch
    geometry = dict(window_scales=(window / min(size),), window_stride=patch / window)
    prompts = speed.PROMPT_POOL[:1]
    label = f"{size[0]}x{size[1]}"
    windows = speed.reference_windows(image, patch)
    ref = speed.reference(image, prompts, clip, processor, patch)
    ours = speed.ours(image, prompts, clip, "sliding_window", geometry, 1)
    return [("reference loop", clip.name, label, "sliding_window", f"{windows} windows", ref,
             f"{windows / ref:,.0f} windows/s"),
            ("ours, same windows", clip.name, label, "sliding_window", f"{ref / ours:.1f}x faster", ours,
             f"{windows / ours:,.0f} windows/s")]


def batching_rows(clip, count: int, size: tuple[int, int], batch: int) -> list[tuple]:
    """Images/s localized one by one and ``batch`` together (proposals), and whether they agree."""
    images = [load_image(np.asarray(render_scene(3, i, *size).image)).to(clip.device) for i in range(count)]
    opts = LocalizeOptions.create(method="proposals", cache=False)
    one, single = batching.images_per_second(images, clip, opts, 1)
    many, batched = batching.images_per_second(images, clip, opts, batch)
    same = "same results" if batching.same(single, batched) else "RESULTS DIFFER"
    label = f"{count} x {size[0]}x{size[1]}"
    return [("images 1 at a time", clip.name, label, "proposals", "", 1 / one, f"{one:.2f} images/s"),
            (f"images {batch} together", clip.name, label, "proposals", same, 1 / many, f"{many:.2f} images/s")]


def store_rows(clip, image: Image.Image, label: str, **options) -> list[tuple]:
    """Per method: a cold run into an empty embedding store, then new prompts from it (s/image and
    the crops they still encode), and whether a warm run agrees with ``cache=False`` (1e-3: float16)."""
    prompts, new_prompts = speed.PROMPT_POOL[:PROMPTS], speed.PROMPT_POOL[PROMPTS:2 * PROMPTS]
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-store-") as folder:
        for method in METHODS:
            run = dict(method=method, **options)
            plain = localize(image, prompts, clip, cache=False, **run)
            seconds = {}
            for name, words in (("cold", prompts), ("warm, new prompts", new_prompts)):
                start = time.perf_counter()
                results = localize(image, words, clip, cache=folder, **run)
                speed._sync(clip.device)
                seconds[name] = time.perf_counter() - start
            warm = localize(image, prompts, clip, cache=folder, **run)
            agree = batching.same([plain], [warm], atol=1e-3)
            crops = results[0].crops
            rows += [("store: cold", clip.name, label, method, "", seconds["cold"], ""),
                     ("store: warm, new prompts", clip.name, label, method,
                      f"{crops.computed} of {crops.computed + crops.stored} crops encoded",
                      seconds["warm, new prompts"],
                      f"{seconds['cold'] / seconds['warm, new prompts']:.1f}x; warm "
                      f"{'= cache=False' if agree else 'DIFFERS from cache=False'}")]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny inputs and a 1-layer model: seconds on a CPU")
    args = parser.parse_args(argv)
    device = torch.device(args.device) if args.device else default_device()
    photo = installed_photos()[0].image
    if args.smoke:
        models = [speed.random_vit_b32(device, 32, geometry_only=True)]
        images = {"photo 320x240": photo.resize((320, 240), Image.Resampling.BILINEAR)}
        reference, batches = ((384, 256), 32), (2, (160, 120), 2)
        options = dict(window_scales=(0.5,), window_stride=0.5)  # seconds, not minutes, on a CPU
    else:
        models = [speed.random_vit_b32(device, 32), speed.random_vit_b32(device, 16)]
        images = {"640x480 scene": render_scene(0, 0, 640, 480).image,
                  "photo 640x480": photo.resize((640, 480), Image.Resampling.BILINEAR)}
        if device.type == "cuda":
            images["5184x3456 scene"] = render_scene(0, 0, 5184, 3456).image
        reference = ((5184, 3456), 256) if device.type == "cuda" else ((1296, 864), 64)
        batches = (64 if device.type == "cuda" else 8, (640, 480), 8)
        options = {}
    rows = []
    for clip, _ in models:
        rows += method_rows(clip, images, **options)
    clip, processor = models[0]
    rows += reference_rows(clip, processor, *reference)
    rows += batching_rows(clip, *batches)
    photo_label = next(label for label in images if label.startswith("photo"))
    rows += store_rows(clip, images[photo_label], photo_label, **options)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"`python benchmarks/gpu.py{' --smoke' if args.smoke else ''}`: {where}, torch {torch.__version__}, "
          f"{models[0][0].dtype}, {PROMPTS} prompts, {date.today()}\n")
    print("| what | model | image | method | work | s/image | rate |")
    print("| --- | --- | --- | --- | ---: | ---: | ---: |")
    for what, model, image, method, work, seconds, rate in rows:
        print(f"| {what} | {model} | {image} | {method} | {work} | {seconds:.3f} | {rate} |")


if __name__ == "__main__":
    main()
