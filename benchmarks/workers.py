"""Scale-out figures on this machine: how fast one MongoDB takes the label saving (the ceiling of
any number of workers), and the images/s of one run sharded over 1 and 2 ``fiftyone delegated
launch`` workers sharing that database (``cluster.py``: a mongod on loopback).

    python benchmarks/workers.py                       # 64 shapes-world images, proposals
    python benchmarks/workers.py --images 16 --writes 200   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster  # noqa: E402

WRITES = """
import json, time, fiftyone as fo
from fiftyone_clip_zeroshot.labeling.runs.jobs import SAVE_EVERY_S
ds = fo.Dataset("{name}")
ds.add_samples([fo.Sample(filepath=f"/images/{{i}}.jpg") for i in range({count})], progress=False)
box = lambda i: fo.Detection(label="red circle", bounding_box=[0.1, 0.1, 0.2, 0.2], confidence=0.9, method="proposals")
start = time.perf_counter()
for sample in ds.iter_samples(autosave=True, batching_strategy="latency", batch_size=SAVE_EVERY_S):
    sample["clip"] = fo.Detections(detections=[box(i) for i in range(5)])
    for prompt in ("red_circle", "blue_square"):
        sample["clip_heatmap_" + prompt] = fo.Heatmap(map_path=f"/maps/{{sample.id}}-{{prompt}}.png", range=[0, 153])
seconds = time.perf_counter() - start
print(json.dumps(dict(samples={count}, seconds=seconds)))
"""
PREPARE = """
import json, fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset
ds = load_shapes_dataset("scale", {images}, "{folder}", seed=21)
ds.persistent = True
print(json.dumps(len(ds)))
"""
QUEUE = """
import json, fiftyone as fo, fiftyone_clip_zeroshot as fz
ds = fo.load_dataset("scale")
fz.detect(ds, ["red circle", "blue square"], model="shapes-world", device="cpu", method="{method}",
          label_field="{field}", shards={shards}, cache=False)
print(json.dumps([s["operation_id"] for s in ds.get_run_info("clip_zeroshot_{field}").config.shards]))
"""


def measure_writes(env: dict, count: int, writers: int) -> float:
    """Samples/s that ``writers`` processes saving labels at once get from the database, together."""
    processes = [subprocess.Popen([sys.executable, "-c", WRITES.format(name=f"writes-{writers}-{i}", count=count)],
                                  env=env, stdout=subprocess.PIPE, text=True) for i in range(writers)]
    results = [json.loads(process.communicate(timeout=1800)[0].strip().splitlines()[-1]) for process in processes]
    return writers * count / max(result["seconds"] for result in results)


def measure_workers(mongo: cluster.LocalMongo, env: dict, root: Path, workers: int, method: str,
                    images: int) -> dict:
    """Queue one run as ``workers`` shards, start that many workers (the cores split between
    them), and time it: from the first shard's start to the last one's end, and wall time."""
    field = f"workers_{workers}"
    ids = cluster.python(env, QUEUE.format(method=method, field=field, shards=workers))
    threads = max(1, (os.cpu_count() or 1) // workers)
    started = time.perf_counter()
    processes = [cluster.start_worker(env, root / f"{field}-{i}.log", threads=threads) for i in range(workers)]
    try:
        def finished():
            states = {str(op["_id"]): op["run_state"] for op in mongo.operations()}
            if any(states.get(i) == "failed" for i in ids):
                raise RuntimeError(f"a shard failed; see {root}/{field}-*.log")
            return all(states.get(i) == "completed" for i in ids)

        cluster.wait_for(finished, 3600, f"{workers} workers", every=0.5)
        wall = time.perf_counter() - started
    finally:
        for process in processes:
            cluster.stop(process)
    ops = [op for op in cluster.MongoClient(mongo.uri)["fiftyone"]["delegated_ops"].find()
           if str(op["_id"]) in ids]
    busy = (max(op["completed_at"] for op in ops) - min(op["started_at"] for op in ops)).total_seconds()
    return dict(workers=workers, threads=threads, busy=busy, wall=wall, per_s=images / busy)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--method", default="proposals")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--writes", type=int, default=2000, help="samples saved for the write ceiling")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="clip-zeroshot-workers-"))
    mongo = cluster.LocalMongo(root).start()
    env = cluster.environment(mongo, root)
    try:
        writes = {writers: measure_writes(env, args.writes, writers) for writers in (1, 2)}
        ceiling = max(writes.values())
        cluster.python(env, PREPARE.format(images=args.images, folder=root / "images"))
        rows = [measure_workers(mongo, env, root, w, args.method, args.images) for w in args.workers]
    finally:
        mongo.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"MongoDB {mongo.uri.split('/?')[0]} (mongod {cluster.DatabaseService.find_mongod()}), "
          f"{os.cpu_count()} cores, {args.images} shapes-world images 640x480, method {args.method}")
    print(f"label saving (detections + 2 heatmaps per sample, batched as detect saves, {args.writes} samples per "
          f"writer): {writes[1]:,.0f} samples/s with one writer, {writes[2]:,.0f} with two at once")
    print(f"{'workers':>7} {'threads each':>12} {'busy s':>8} {'wall s':>8} {'images/s':>9} {'x 1 worker':>10}")
    for row in rows:
        print(f"{row['workers']:>7} {row['threads']:>12} {row['busy']:>8.1f} {row['wall']:>8.1f} "
              f"{row['per_s']:>9.2f} {row['per_s'] / rows[0]['per_s']:>9.2f}x")
    print(f"ceiling: workers x images/s per worker stays under {ceiling:,.0f} images/s of label saving, i.e. "
          f"{ceiling / rows[0]['per_s']:,.0f} workers at this per-worker speed")


if __name__ == "__main__":
    main()
