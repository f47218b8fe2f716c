"""``dataset.apply_model`` with the shipped model on 64 JPEGs: images/s with ``num_workers`` 0 and
2 (decoding in DataLoader workers), against a mongod of its own (``cluster.py``).

Needs ``fiftyone.utils.torch`` to import, i.e. a torchvision that matches torch:

    python benchmarks/data_loader.py [--images 64 --size 1920x1080 --method proposals]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster  # noqa: E402

SCRIPT = """
import json, time, torch
import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.labeling.fo_models.factory import data_loader_ready
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset
assert data_loader_ready(), "fiftyone.utils.torch does not import here (torchvision)"
ds = load_shapes_dataset("loader", {images}, "{folder}", seed=31, width={width}, height={height})
model = fz.zero_shot_model(["red circle", "blue square"], model="shapes-world", device="cpu", method="{method}")
model.predict(ds.first().filepath)  # warm-up
rows = []
for workers in {workers}:
    start = time.perf_counter()
    ds.apply_model(model, label_field=f"w{{workers}}", batch_size={batch_size}, num_workers=workers, progress=False)
    rows.append(dict(workers=workers, seconds=time.perf_counter() - start))
start = time.perf_counter()
for path in ds.values("filepath"):
    fz.core.images.load_image(path)
decode = (time.perf_counter() - start) / len(ds)
print(json.dumps(dict(rows=rows, decode=decode, threads=torch.get_num_threads(), torch=torch.__version__)))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--method", default="proposals")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))
    root = Path(tempfile.mkdtemp(prefix="clip-zeroshot-loader-"))
    mongo = cluster.LocalMongo(root).start()
    try:
        result = cluster.python(cluster.environment(mongo, root), SCRIPT.format(
            images=args.images, folder=root / "images", width=width, height=height, method=args.method,
            workers=args.workers, batch_size=args.batch_size), timeout=3600)
    finally:
        mongo.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"apply_model, shipped shapes-world model, {args.images} JPEGs {args.size}, method {args.method}, "
          f"batch_size {args.batch_size}, CPU, {result['threads']} torch threads, torch {result['torch']}; "
          f"decoding one image alone: {result['decode'] * 1000:.0f} ms")
    base = args.images / result["rows"][0]["seconds"]
    print(f"{'num_workers':>11} {'seconds':>8} {'images/s':>9} {'x first':>8}")
    for row in result["rows"]:
        rate = args.images / row["seconds"]
        print(f"{row['workers']:>11} {row['seconds']:>8.1f} {rate:>9.2f} {rate / base:>7.2f}x")


if __name__ == "__main__":
    main()
