"""Embed once, prompt many: what the embedding store saves when prompts change.

    python benchmarks/store.py                       # 5 shapes scenes (shapes-world) and the installed photos
    python benchmarks/store.py --model timing        # photos on the full random ViT-B/32: real s/image
    python benchmarks/store.py --scenes 10 --photos 3 --methods sliding_window dense
    python benchmarks/store.py --storage 200 10000   # the store itself: MB/s, bytes, lookups among 10,000

Per set and method, four runs over the same images, one after the other in one process: uncached
(``cache=False``), cold (an empty store), warm with the same prompts, and warm with new prompts.
For each: crops per image encoded (and read from the store), and s/image. Then the crops a cold
run encodes over an uncached run's, the share of an uncached run's crops that the new prompts still
encode, the speed-up of the new prompts over an uncached run of them, and the bytes each image
takes in the store, in float32 (the CPU's) and float16 (a GPU's: the same entries recast).
Photos use ``--model`` (default ``geometry``: ViT-B/32's input and patches on a 1-layer random
tower, so the crops are real and the seconds are not; ``timing``: the full random ViT-B/32); with
random weights, occlusion is left out on photos, since its cost follows a gate they open everywhere.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from fiftyone_clip_zeroshot import load_model, localize
from fiftyone_clip_zeroshot.core.embedding_store import EmbeddingStore
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.core.models.model import default_device
from fiftyone_clip_zeroshot.photos import PHOTO_SETS
from fiftyone_clip_zeroshot.shapes.world import render_scene

SCENE_PROMPTS = (["red circle", "blue square"], ["yellow star", "green triangle"])
PHOTO_PROMPTS = (["a photo of a person", "a photo of a cat"], ["a photo of a dog", "a photo of a car"])
RUNS = ("uncached", "cold", "warm same", "warm new")
_spec = importlib.util.spec_from_file_location("speed", Path(__file__).with_name("speed.py"))
speed = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(speed)

COLUMNS = (f"{'set':<7} {'method':<15} " + " ".join(f"{run + ' crops':>16} {'s/img':>6}" for run in RUNS)
           + f" {'cold/unc':>8} {'new/unc':>7} {'new x':>6} {'MB f32':>7} {'MB f16':>7}")


def run_once(images: list, prompts: list[str], clip, method: str, cache, **options) -> tuple[float, float, float]:
    """Crops encoded and read from the store per image, and s/image, of one run over ``images``."""
    computed = stored = 0
    start = time.perf_counter()
    for image in images:
        crops = localize(image, prompts, clip, method=method, cache=cache, **options)[0].crops
        computed, stored = computed + crops.computed, stored + crops.stored
    n = len(images)
    return computed / n, stored / n, (time.perf_counter() - start) / n


def entry_bytes(root: Path, images: int) -> tuple[float, float]:
    """MB per image in the store at ``root``, as written (float32 rows) and recast to float16."""
    f32 = f16 = 0
    for path in root.rglob("*.npz"):
        f32 += path.stat().st_size
        with np.load(path) as data:
            arrays = {k: (v.astype(np.float16) if k.startswith("rows") and v.dtype == np.float32 else v)
                      for k, v in data.items()}
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        f16 += buffer.getbuffer().nbytes
    return f32 / images / 1e6, f16 / images / 1e6


def measure(set_name: str, images: list, prompts: tuple[list[str], list[str]], clip, method: str,
            **options) -> str:
    with tempfile.TemporaryDirectory(prefix="store-bench-") as folder:
        uncached = run_once(images, prompts[0], clip, method, False)
        cold = run_once(images, prompts[0], clip, method, folder, **options)
        same = run_once(images, prompts[0], clip, method, folder, **options)
        new = run_once(images, prompts[1], clip, method, folder, **options)
        new_uncached = run_once(images, prompts[1], clip, method, False)
        mb32, mb16 = entry_bytes(Path(folder), len(images))
    cells = " ".join(f"{f'{c:.0f}+{s:.0f}':>16} {t:>6.2f}" for c, s, t in (uncached, cold, same, new))
    cold_factor = cold[0] / max(uncached[0], 1e-9)
    new_share = new[0] / max(new_uncached[0], 1e-9)
    return (f"{set_name:<7} {method:<15} {cells} {cold_factor:>8.2f} {new_share:>7.1%} "
            f"{new_uncached[2] / max(new[2], 1e-9):>6.1f} {mb32:>7.2f} {mb16:>7.2f}")


def storage(folder: Path, photos: int, lookups: int) -> None:
    """The store's own figures: write and read throughput of photo-sized entries (1,000 pooled
    rows of 512 floats, a ViT-B/32 sliding window), and the cost of finding one image among
    ``lookups`` stored ones (whether it is there; opening its entry and checking it)."""
    rows = np.random.default_rng(0).standard_normal((1000, 512)).astype(np.float32)
    keys = np.arange(6000, dtype=np.int64).reshape(1000, 6)
    store = EmbeddingStore(folder / "photos", max_bytes=10**12)
    print(f"{'what':<44} {'images':>7} {'MB/image':>9} {'ms/image':>9} {'MB/s':>7}")
    for dtype, label in ((torch.float32, "float32"), (torch.float16, "float16")):
        start = time.perf_counter()
        for index in range(photos):
            entry = store.entry(label, f"{index:032x}", dtype)
            entry.add("pooled", keys, torch.from_numpy(rows))
            entry.flush()
        write = (time.perf_counter() - start) / photos
        size = sum(p.stat().st_size for p in (folder / "photos").rglob("*.npz") if f"/{label}/" in str(p)) / photos
        start = time.perf_counter()
        for index in range(photos):
            found, missing = store.entry(label, f"{index:032x}", dtype).lookup("pooled", keys)
            assert not len(missing)
        read = (time.perf_counter() - start) / photos
        print(f"{'write a photo entry, ' + label:<44} {photos:>7} {size / 1e6:>9.2f} {write * 1e3:>9.1f} "
              f"{size / 1e6 / write:>7.0f}")
        print(f"{'read all its rows back, ' + label:<44} {photos:>7} {size / 1e6:>9.2f} {read * 1e3:>9.1f} "
              f"{size / 1e6 / read:>7.0f}")
    small = EmbeddingStore(folder / "many", max_bytes=10**12)
    row = torch.from_numpy(rows[:1])
    for index in range(lookups):
        entry = small.entry("model", f"{index:032x}", torch.float32)
        entry.add("pooled", keys[:1], row)
        entry.flush()
    start = time.perf_counter()
    assert all(small.has("model", f"{index:032x}") for index in range(lookups))
    has = (time.perf_counter() - start) / lookups
    start = time.perf_counter()
    for index in range(lookups):
        small.entry("model", f"{index:032x}", torch.float32).lookup("pooled", keys[:1])
    opened = (time.perf_counter() - start) / lookups
    print(f"{'is this image stored? (1 of ' + f'{lookups:,})':<44} {lookups:>7} {'':>9} {has * 1e3:>9.3f}")
    print(f"{'open and check its entry (1 of ' + f'{lookups:,})':<44} {lookups:>7} {'':>9} {opened * 1e3:>9.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--scenes", type=int, default=5, help="shapes scenes (0: none)")
    parser.add_argument("--photos", type=int, default=None, help="at most this many installed photos (0: none)")
    parser.add_argument("--model", default="geometry", help="the photos' model: geometry, timing or a checkpoint")
    parser.add_argument("--device", default=None)
    parser.add_argument("--embed-all-candidates", action="store_true",
                        help="every run with embed_all_candidates=True (the setting for trying many prompts)")
    parser.add_argument("--storage", type=int, nargs=2, metavar=("PHOTOS", "LOOKUPS"),
                        help="only the store's own figures: PHOTOS photo-sized entries, lookups among LOOKUPS images")
    args = parser.parse_args(argv)
    if args.storage:
        print(f"# embedding store on disk — {date.today()}, {platform.processor() or platform.machine()}, "
              f"{tempfile.gettempdir()}\n")
        with tempfile.TemporaryDirectory(prefix="store-bench-") as folder:
            storage(Path(folder), *args.storage)
        return
    device = torch.device(args.device) if args.device else default_device()
    if args.model in ("geometry", "timing"):
        photo_clip = speed.random_vit_b32(device, geometry_only=args.model == "geometry")[0]
    else:
        photo_clip = load_model(args.model, device=device)
    scene_clip = load_model("shapes-world", device=device)
    options = dict(embed_all_candidates=True) if args.embed_all_candidates else {}
    print(f"# embedding store — {date.today()}, {platform.processor() or platform.machine()} "
          f"({torch.get_num_threads()} threads), torch {torch.__version__}; scenes: shapes-world, "
          f"{SCENE_PROMPTS[0]} then {SCENE_PROMPTS[1]}; photos: {photo_clip.name}, {PHOTO_PROMPTS[0]} then "
          f"{PHOTO_PROMPTS[1]}; every method at its defaults{', embed_all_candidates=True' * bool(options)}")
    print("# crops: encoded + read from the store, per image; cold/unc: the crops a cold run encodes over an "
          "uncached run's;\n# new/unc: the share of an uncached run's crops the new prompts encode; new x: their "
          "speed-up\n")
    print(COLUMNS)
    print("-" * len(COLUMNS))
    scenes = [np.asarray(render_scene(11, index).image) for index in range(args.scenes)]
    photos = [photo.image for photo in PHOTO_SETS["installed"]()[: args.photos]] if args.photos != 0 else []
    for method in args.methods:
        if scenes:
            print(measure("scenes", scenes, SCENE_PROMPTS, scene_clip, method, **options), flush=True)
        if photos and (method != "occlusion" or args.model not in ("geometry", "timing")):
            print(measure("photos", photos, PHOTO_PROMPTS, photo_clip, method, **options), flush=True)


if __name__ == "__main__":
    main()
