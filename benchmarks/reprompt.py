"""A whole dataset re-prompted: six new prompts over images the embedding store has seen, timed end to end.

    python benchmarks/reprompt.py --images 10000                  # the issue's size (about 8 GB of store)
    python benchmarks/reprompt.py --images 200 --check 20 --methods sliding_window

The images are distinct 640x480 PNGs: ``--templates`` shapes scenes, each image one of them with its
index written into the low bits of its last row (no two decode to the same pixels; no segment moves).
A cold run at this size would take hours on a CPU, so the store is seeded: the templates' images are
run cold (``shapes-world``, prompts the warm runs never ask), and every other image gets its
template's entry under its own digest, with the file notes a run leaves. ``--check N`` runs N seeded
images cold into a second store and compares the entries: the same kinds, keys, shapes and dtypes.

Then, per method, a fresh process runs ``fz.detect`` with six new prompts over the whole dataset
(detections and heatmaps written) and reports seconds, images/s, crops encoded per image, peak RSS,
and the split of the time by stage (``core.stopwatch``). Every method runs with
``embed_all_candidates``, as a user who re-prompts would set it (at defaults, each new prompt
encodes the context crops of the candidates it newly picks); occlusion is left out (its occluded crops
depend on the prompts, so a warm run encodes most of them again). Everything runs against a
mongod and folders of its own (``cluster.py``), deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster  # noqa: E402

MODEL = "shapes-world"
COLD_PROMPTS = ["a red circle", "a blue square"]
NEW_PROMPTS = ["a yellow star", "a green triangle", "a purple hexagon", "an orange cross", "a cyan ring",
               "a pink heart"]
ALL = {"embed_all_candidates": True}  # what a user who tries many prompts sets (at defaults, sliding window encodes
OPTIONS = {"sliding_window": ALL, "proposals": ALL, "dense": ALL}  # the context crops each new prompt newly picks)
STAGES = ("select", "decode", "store read", "encode", "scoring", "maps and boxes", "heatmaps", "store write",
          "db write")
DATASET = "reprompt"


def stamped_images(folder: Path, count: int, templates: int) -> list[tuple[str, int]]:
    """Write ``count`` distinct PNGs (template ``i % templates`` with ``i`` in its last row's low bits);
    returns (path, template) per image."""
    import numpy as np
    from PIL import Image

    from fiftyone_clip_zeroshot.shapes.world import render_scene

    folder.mkdir(parents=True, exist_ok=True)
    scenes = [np.asarray(render_scene(7, t, 640, 480).image.convert("RGB")) for t in range(templates)]
    bits = 1 << np.arange(24)
    written = []
    for index in range(count):
        pixels = scenes[index % templates].copy()
        pixels[-1, -24:, 0] = (pixels[-1, -24:, 0] & 0xFE) | ((index & bits) > 0)
        path = folder / f"image-{index:05d}.png"
        Image.fromarray(pixels).save(path, compress_level=1)
        written.append((str(path), index % templates))
    return written


def entry_path(store, fingerprint: str, path: str):
    """The store entry of the image file at ``path`` (its digest from the file's note)."""
    import torch

    return store.entry(fingerprint, store.file_digest(path), torch.float32).path


def layout(path) -> dict:
    """An entry's kinds, each with its keys (sorted rows), row shape and dtype."""
    import numpy as np

    with np.load(path) as data:
        kinds = {}
        for name in data.files:
            if name.startswith("kind"):
                index = name[4:]
                keys, rows = data[f"keys{index}"], data[f"rows{index}"]
                kinds[data[name].tobytes().decode()] = (np.unique(keys, axis=0).tolist(), rows.shape, str(rows.dtype))
    return kinds


def setup(root: Path, count: int, templates: int, check: int, link: bool, methods: list[str]) -> dict:
    """Images, dataset, cold runs of the templates, seeded entries and notes, and the layout check."""
    import fiftyone as fo
    import torch

    import fiftyone_clip_zeroshot as fz
    from fiftyone_clip_zeroshot.core.embedding_store import open_store, pixels_digest
    from fiftyone_clip_zeroshot.core.geometry.images import load_image

    start = time.perf_counter()
    images = stamped_images(root / "images", count, templates)
    dataset = fo.Dataset(DATASET, persistent=True)
    dataset.add_samples([fo.Sample(filepath=path) for path, _ in images], progress=False)
    written = time.perf_counter() - start
    model = fz.load_model(MODEL, device="cpu")
    stores = {method: open_store(str(store_of(root, method))) for method in methods}
    for method, store in stores.items():
        fz.detect(dataset.limit(templates), COLD_PROMPTS, method=method, model=model, label_field=f"cold_{method}",
                  heatmaps=False, progress=False, cache=str(store.root), **OPTIONS[method])
    for path, template in images[templates:]:
        pixels = load_image(path)
        digest = pixels_digest(pixels)
        for store in stores.values():
            target = store.entry(model.fingerprint, digest, torch.float32).path
            target.parent.mkdir(parents=True, exist_ok=True)
            (os.link if link else shutil.copyfile)(entry_path(store, model.fingerprint, images[template][0]), target)
            store.note_file(path, digest, tuple(pixels.shape[1:]))
    seeded = time.perf_counter() - start - written
    same = 0
    checked = dataset.skip(templates).limit(check)
    for method, store in stores.items() if check else ():
        other = root / f"check-{method}"
        fz.detect(checked, COLD_PROMPTS, method=method, model=model, label_field=f"check_{method}", heatmaps=False,
                  progress=False, cache=str(other), **OPTIONS[method])
        real = open_store(str(other))
        same += sum(layout(entry_path(real, model.fingerprint, p)) == layout(entry_path(store, model.fingerprint, p))
                    for p in checked.values("filepath"))
        shutil.rmtree(other)
    return dict(written=written, seeded=seeded, checked=len(checked) * len(stores), same=same,
                entry_mb={method: sum(p.stat().st_size for p in store.root.rglob("*.npz")) / count / 1e6
                          for method, store in stores.items()})


def store_of(root: Path, method: str) -> Path:
    """The embedding store seeded for ``method`` (each method's own: what a run of it alone writes)."""
    return root / f"store-{method}"


def warm(root: Path, method: str, images: int) -> dict:
    """Time ``fz.detect`` of the new prompts over the first ``images`` samples, in this fresh process."""
    import resource

    import fiftyone as fo

    import fiftyone_clip_zeroshot as fz
    from fiftyone_clip_zeroshot.core import stopwatch
    from fiftyone_clip_zeroshot.labeling.runs.detect import DetectJob
    from fiftyone_clip_zeroshot.labeling.runs.jobs import run_job

    samples = fo.load_dataset(DATASET).limit(images)
    model = fz.load_model(MODEL, device="cpu")
    stopwatch.reset()
    start = time.perf_counter()
    job = DetectJob(samples, NEW_PROMPTS, method=method, model=model, label_field=f"warm_{method}_{images}",
                    cache=str(store_of(root, method)), **OPTIONS[method])
    run_job(job, progress=False)
    seconds = time.perf_counter() - start
    return dict(seconds=seconds, encoded=job.crops.computed / images, stored=job.crops.stored / images,
                failures=len(job.failures), stages=stopwatch.totals(),
                rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def in_process(env: dict[str, str], *args: str) -> dict:
    """This script's ``args`` subcommand in a fresh interpreter; its last output line is JSON."""
    result = subprocess.run([sys.executable, __file__, *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--templates", type=int, default=20, help="distinct scenes the images are stamped from")
    parser.add_argument("--check", type=int, default=100, help="seeded images checked against a real cold run")
    parser.add_argument("--methods", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--sizes", type=int, nargs="*", default=[], help="also time the first N images (RSS)")
    parser.add_argument("--link", action="store_true",
                        help="seed entries as hard links to their template's (less disk; reads from the page cache)")
    parser.add_argument("--keep", default=None, help="a folder to keep the deployment in (default: deleted)")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="clip-zeroshot-reprompt-"))
    mongo = cluster.LocalMongo(root).start()
    env = {**cluster.environment(mongo, root), "FIFTYONE_CLIP_ZEROSHOT_CACHE_GB": "1000"}
    try:
        made = in_process(env, "_setup", str(root), str(args.images), str(args.templates), str(args.check),
                          str(int(args.link)), *args.methods)
        rows = [(method, size, in_process(env, "_warm", str(root), method, str(size)))
                for method in args.methods for size in sorted({*args.sizes, args.images})]
    finally:
        mongo.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    sizes = ", ".join(f"{method} {mb:.2f}" for method, mb in made["entry_mb"].items())
    print(f"{date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {MODEL} on the "
          f"CPU; {args.images:,} distinct 640x480 PNGs from {args.templates} scenes; stores seeded in "
          f"{made['seeded']:.0f} s{' (hard links)' * args.link}, MB per image: {sizes}; layout check: "
          f"{made['same']} of {made['checked']} seeded entries equal a real cold run's")
    print(f"{'method':<15} {'images':>7} {'seconds':>8} {'img/s':>7} {'enc/img':>8} {'RSS MB':>7} "
          + " ".join(f"{s:>9}" for s in STAGES) + "   (ms per image)")
    for method, size, row in rows:
        split = " ".join(f"{1000 * row['stages'].get(s, 0) / size:>9.2f}" for s in STAGES)
        print(f"{method:<15} {size:>7} {row['seconds']:>8.1f} {size / row['seconds']:>7.1f} {row['encoded']:>8.1f} "
              f"{row['rss_mb']:>7.0f} {split}" + (f"  {row['failures']} failed" if row["failures"] else ""))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_setup":
        root, count, templates, check, link, *methods = sys.argv[2:]
        print(json.dumps(setup(Path(root), int(count), int(templates), int(check), link == "1", methods)))
    elif len(sys.argv) > 1 and sys.argv[1] == "_warm":
        print(json.dumps(warm(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))))
    else:
        main()
