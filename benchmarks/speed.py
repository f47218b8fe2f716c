"""Speed: the reference per-window CLIP loop vs this package vs the raw image encoder; one table.

    python benchmarks/speed.py                 # GPU: 5184x3456, 256-px patches, 6x6-patch windows
    python benchmarks/speed.py --device cpu    # CPU: 1296x864, 64-px patches (same window grid)
    python benchmarks/speed.py --smoke         # seconds-long run for CI
    python benchmarks/speed.py --methods       # every method at its defaults: encoder work and s/image

The model is a randomly initialised ViT-B/32 CLIP (weights do not change speed; none can be
downloaded here). ``reference`` re-implements the well-known per-window loop (Pinecone's
"zero-shot object detection with CLIP"): CLIPProcessor per window, a full CLIP forward per
window and prompt, batch 1. ``limit`` is ``get_image_features`` on ready-made tensors at the
best batch size. ``detect()`` runs through FiftyOne over JPEGs on disk, decoding included.

``--methods`` times every localizer at its default options (one run each) on 640x480 and
5184x3456 scenes and on a photo (scikit-image's astronaut at 640x480) with a random ViT-B/32
CLIP, and on the 640x480 scene and the photo with ViT-B/16, and counts the
encoder's work as 224-px forwards (tokens through the vision tower / tokens of one 224-px
crop), verification crops included. Both models see 224-px crops, so the counts are the same
for both; only the time per forward differs. Occlusion is left out: with random weights every
prompt passes its gate, so every context is occluded (the worst case the main table times),
which says nothing about its defaults. Every run here encodes every crop (``cache=False``): these
are first-run costs; ``benchmarks/store.py`` measures reruns from the embedding store.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from datetime import date

import numpy as np
import torch
from PIL import Image

from fiftyone_clip_zeroshot import load_model, localize
from fiftyone_clip_zeroshot.core.geometry.windows import WindowGrid
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.core.models.model import ClipModel, default_device
from fiftyone_clip_zeroshot.photos import installed_photos
from fiftyone_clip_zeroshot.shapes.world import CLASSES, render_scene

PROMPT_POOL = [f"a photo of a {c}" for c in CLASSES]


def random_vit_b32(device: torch.device, patch: int = 32, geometry_only: bool = False) -> tuple[ClipModel, object]:
    """A ViT-B/32-shaped CLIP (B/16 with ``patch=16``) with random weights, plus a CLIPProcessor
    for the reference loop. ``geometry_only``: the same input size and patches on a 1-layer,
    64-wide tower, which sees the same crops and tiles at a fraction of the time (not for timing)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tiny = load_model("shapes-world", device="cpu")  # only for its tokenizer
    torch.manual_seed(0)
    config = CLIPConfig()
    config.vision_config.patch_size = patch
    config.text_config.vocab_size = len(tiny.tokenizer)
    config.text_config.eos_token_id = tiny.tokenizer.eos_token_id
    if geometry_only:
        for tower in (config.vision_config, config.text_config):
            tower.hidden_size, tower.intermediate_size, tower.num_hidden_layers = 64, 128, 1
            tower.num_attention_heads = 2
        config.projection_dim = 64
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model = CLIPModel(config).to(device, dtype).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tiny.tokenizer)
    name = f"random ViT-B/{patch}" + (" geometry" if geometry_only else "")
    clip = ClipModel(name, model, tiny.tokenizer, 224, tuple(processor.image_processor.image_mean),
                     tuple(processor.image_processor.image_std), device, dtype, batch_size=512)
    return clip, processor


@torch.inference_mode()
def reference(image: Image.Image, prompts: list[str], clip: ClipModel, processor, patch: int, window: int = 6) -> float:
    """The reference loop; returns seconds. Kept here, never in the package."""
    start = time.perf_counter()
    tensor = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255
    patches = tensor.unfold(1, patch, patch).unfold(2, patch, patch)  # (3, nY, nX, p, p): edges dropped
    for prompt in prompts:
        scores = torch.zeros(patches.shape[1], patches.shape[2])
        runs = torch.ones(patches.shape[1], patches.shape[2])
        for y in range(patches.shape[1] - window + 1):
            for x in range(patches.shape[2] - window + 1):
                side = window * patch
                big = patches[:, y : y + window, x : x + window].permute(1, 3, 2, 4, 0).reshape(side, side, 3)
                image = (big.numpy() * 255).astype(np.uint8)
                inputs = processor(images=image, text=prompt, return_tensors="pt", padding=True)
                inputs = {k: v.to(clip.device) for k, v in inputs.items()}
                inputs["pixel_values"] = inputs["pixel_values"].to(clip.dtype)
                score = clip.model(**inputs).logits_per_image.item()
                scores[y : y + window, x : x + window] += score
                runs[y : y + window, x : x + window] += 1
        scores = (scores / runs - (scores / runs).mean()).clamp(min=0)
        scores = (scores - scores.min()) / (scores.max() - scores.min() + 1e-9)
        mask = scores > 0.5
        if mask.any():
            rows, cols = torch.nonzero(mask, as_tuple=True)
            _box = (cols.min() * patch, rows.min() * patch, (cols.max() + 1) * patch, (rows.max() + 1) * patch)
    _sync(clip.device)
    return time.perf_counter() - start


def reference_windows(image: Image.Image, patch: int, window: int = 6) -> int:
    ny, nx = image.height // patch, image.width // patch
    return (ny - window + 1) * (nx - window + 1)


def limit(clip: ClipModel, batches: tuple[int, ...]) -> tuple[float, int]:
    """Best raw ``get_image_features`` crops/s over ``batches`` on pre-made inputs."""
    best = (0.0, 0)
    for batch in batches:
        pixels = torch.randn(batch, 3, clip.image_size, clip.image_size, device=clip.device, dtype=clip.dtype)
        with torch.inference_mode():
            clip.model.get_image_features(pixel_values=pixels)
            _sync(clip.device)
            start, reps = time.perf_counter(), 0
            while reps < 3 or time.perf_counter() - start < 1.0:
                clip.model.get_image_features(pixel_values=pixels)
                reps += 1
            _sync(clip.device)
        rate = batch * reps / (time.perf_counter() - start)
        best = max(best, (rate, batch))
    return best


def ours(image: Image.Image, prompts: list[str], clip: ClipModel, method: str, options: dict, repeats: int) -> float:
    localize(image, prompts, clip, method=method, cache=False, **options)  # warm-up
    _sync(clip.device)
    start = time.perf_counter()
    for _ in range(repeats):
        localize(image, prompts, clip, method=method, cache=False, **options)
    _sync(clip.device)
    return (time.perf_counter() - start) / repeats


def dataset_rate(image: Image.Image, count: int, prompts: list[str], clip: ClipModel, options: dict) -> float:
    """Images/s of ``detect()`` over ``count`` JPEGs through a temporary FiftyOne dataset."""
    import fiftyone as fo

    from fiftyone_clip_zeroshot import detect

    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for i in range(count):
            path = os.path.join(folder, f"{i:04d}.jpg")
            image.save(path, quality=90)
            paths.append(path)
        dataset = fo.Dataset()
        dataset.add_samples([fo.Sample(filepath=p) for p in paths], progress=False)
        run = dict(model=clip, label_field="bench", heatmaps=False, progress=False, cache=False, **options)
        detect(dataset, prompts, **run)
        start = time.perf_counter()
        detect(dataset, prompts, **run)
        elapsed = time.perf_counter() - start
        dataset.delete()
    return count / elapsed


class EncoderMeter:
    """Counts the vision tower's work as 224-px forwards: every batch's tokens over one crop's."""

    def __init__(self, clip: ClipModel):
        vision = clip.model.vision_model
        self.per_crop = (clip.image_size // vision.config.patch_size) ** 2 + 1
        self.tokens = 0
        vision.embeddings.register_forward_hook(self._count)

    def _count(self, module, inputs, output) -> None:
        self.tokens += output.shape[0] * output.shape[1]

    @property
    def forwards(self) -> float:
        return self.tokens / self.per_crop


def method_costs(device: torch.device, prompt_counts: list[int]) -> None:
    """Every method at its defaults, per image: 224-px forwards and seconds (``--methods``)."""
    header = (f"{'model':<16} {'image':<10} {'method':<15} {'prompts':>7} {'forwards':>9} {'s/image':>9} "
              f"{'÷ sliding (forwards/time)':>26}")
    print(header)
    print("-" * len(header))
    photo = installed_photos()[0].image.resize((640, 480), Image.Resampling.BILINEAR)
    for patch, sizes in ((32, ((640, 480), "photo", (5184, 3456))), (16, ((640, 480), "photo"))):
        clip, _ = random_vit_b32(device, patch)
        meter = EncoderMeter(clip)
        localize(render_scene(0, 0, 320, 240).image, PROMPT_POOL[:1], clip)  # warm-up
        for size in sizes:
            image = photo if size == "photo" else render_scene(0, 0, *size).image
            label = "photo" if size == "photo" else f"{size[0]}x{size[1]}"
            for method in (m for m in METHODS if m != "occlusion"):  # sliding_window first: the others compare
                for n in prompt_counts if method == "dense" else prompt_counts[:1]:
                    meter.tokens = 0
                    start = time.perf_counter()
                    localize(image, PROMPT_POOL[:n], clip, method=method, cache=False)
                    _sync(clip.device)
                    seconds, forwards = time.perf_counter() - start, meter.forwards
                    if method == "sliding_window":
                        sliding = (forwards, seconds)
                    ratio = f"{sliding[0] / forwards:.1f}x / {sliding[1] / seconds:.1f}x"
                    print(f"{clip.name:<16} {label:<10} {method:<15} {n:>7} {forwards:>9.0f} {seconds:>9.2f} "
                          f"{ratio:>26}", flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None)
    parser.add_argument("--smoke", action="store_true", help="tiny image, 1 prompt count, shapes-world model")
    parser.add_argument("--images", type=int, default=None, help="JPEGs for the detect() row")
    parser.add_argument("--prompts", type=int, nargs="+", default=None)
    parser.add_argument("--methods", action="store_true", help="every method at its defaults (see above)")
    args = parser.parse_args()

    device = torch.device(args.device) if args.device else default_device()
    if args.methods:
        print(f"# methods at their defaults — {date.today()}, "
              f"{torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'CPU'} "
              f"({torch.get_num_threads()} threads), torch {torch.__version__}")
        print("# forwards: 224-px encoder forwards per image, verification crops included; "
              "÷ sliding: forwards/time of sliding_window on the same image\n")
        method_costs(device, args.prompts or [1, 10])
        return
    gpu = device.type == "cuda"
    if args.smoke:
        width, height, patch, counts, images = 384, 256, 32, [1], 2
        clip = load_model("shapes-world", device=device)
        from transformers import CLIPImageProcessor, CLIPProcessor

        processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 64},
                                  crop_size={"height": 64, "width": 64}), tokenizer=clip.tokenizer)
    else:
        width, height, patch = (5184, 3456, 256) if gpu else (1296, 864, 64)
        counts, images = [1, 2, 10], (200 if gpu else 8)
        clip, processor = random_vit_b32(device)
    counts = args.prompts or counts
    images = args.images or images
    image = render_scene(0, 0, width, height).image
    window = 6 * patch
    geometry = dict(window_scales=(window / min(width, height),), window_stride=patch / window)
    # threshold 0: every context is occluded (the worst case; normally only confident ones are)
    occlusion = dict(context_scales=(window / min(width, height),), context_stride=1.0, confidence_thresh=0.0)
    windows = reference_windows(image, patch)

    crops_per_s, best_batch = limit(clip, (64, 128, 256, 512) if gpu else (16, 32, 64))
    print(f"# speed — {date.today()}, {torch.cuda.get_device_name() if gpu else platform.processor() or 'CPU'}"
          f" ({torch.get_num_threads()} threads), torch {torch.__version__}, model {clip.name}, {clip.dtype}")
    print(f"# image {width}x{height}, {patch}-px patches, 6x6-patch windows: reference {windows} windows")
    print(f"# limit: {crops_per_s:,.0f} crops/s (batch {best_batch}) = "
          f"{windows / crops_per_s * 1000:.1f} ms per image\n")
    header = f"{'prompts':>7} {'what':<24} {'s/image':>9} {'windows/s':>10} {'÷ reference':>12} {'÷ limit':>8}"
    print(header)
    print("-" * len(header))
    for n in counts:
        prompts = PROMPT_POOL[:n]
        ref = reference(image, prompts, clip, processor, patch)
        rows = [("reference loop", ref, windows * n)]
        sw = ours(image, prompts, clip, "sliding_window", geometry, 1 if args.smoke else 3)
        rows.append(("ours sliding_window", sw, _grid_windows(width, height, window, patch, clip.image_size)))
        oc = ours(image, prompts, clip, "occlusion", occlusion, 1)
        rows.append(("ours occlusion, worst", oc, None))
        for name, seconds, count in rows:
            rate = f"{count / seconds:>10,.0f}" if count else f"{'':>10}"
            share = f"{count / seconds / crops_per_s:>8.0%}" if count and name != "reference loop" else f"{'':>8}"
            print(f"{n:>7} {name:<24} {seconds:>9.4f} {rate} {ref / seconds:>11.1f}x {share}")
    rate = dataset_rate(image, images, PROMPT_POOL[:2], clip, geometry)
    print(f"\ndetect() through FiftyOne, {images} JPEGs of {width}x{height}, 2 prompts, decode included: "
          f"{rate:.2f} images/s")


def _grid_windows(width: int, height: int, window: int, stride: int, size: int) -> int:
    return len(WindowGrid.build((height, width), window, stride, size))


if __name__ == "__main__":
    main()
