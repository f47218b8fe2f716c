"""Objects by text across a dataset: precision of the two-stage search, and what the index costs.

    python benchmarks/search.py --panel                     # precision@10 per panel model (docs/search.md)
    python benchmarks/search.py --scale 1000 10000          # build and query times, memory, per backend
    python benchmarks/search.py --panel --after-detect      # and how much of the index an earlier detect gave
    python benchmarks/search.py --stream 1000 10000         # index_objects' peak memory, per backend
    python benchmarks/search.py --scenes 20 --scale 200     # a short run

**Precision** (per model): ``--scenes`` held-out shapes scenes (640x480, a seed no test model saw)
get their candidates (``fz.propose``) and an index (``fz.index_objects``, sklearn). For every class
with at least 10 objects in them, the prompt "a photo of a <class>" searches the index; a patch
counts when its box overlaps an object of that class by IoU 0.5 or more. Precision@10 is the mean
over those classes, for the brain's cosine order alone (its 10 nearest) and re-ranked by
``fz.search`` (the 40 nearest, scored against the negative prompts and the other 29 class prompts).

**Scale**: ``--scale N`` samples, each with the mean candidate count of the precision scenes,
whose embeddings are real candidate embeddings of those scenes, redrawn and jittered (so the
index holds as many patches as N scenes would, in the same space; the encoder's cost per patch is
in docs/speed.md). Per backend: the time ``compute_similarity`` takes to build the index from the
embeddings, the process's memory growth, the on-disk size (LanceDB), and the median latency of a
text query: the brain's nearest 40 alone, and the whole ``fz.search`` (k=10).

**Stream**: ``--stream N`` samples as for ``--scale``, all showing one small image, indexed by
``fz.index_objects`` (``cache=False``) with the encoder replaced by draws from the same pool of
real embeddings (the encoder's own cost is in docs/speed.md). Per backend: the run's time and its
peak memory above what the process held before it (sampled every 10 ms), which stays flat when
the index is filled chunk by chunk.
"""

from __future__ import annotations

import argparse
import atexit
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(tempfile.mkdtemp(prefix="clip-zeroshot-search-"))
os.environ.update(  # FiftyOne and the embedding store in throwaway folders, never the user's
    FIFTYONE_DEFAULT_DATASET_DIR=str(ROOT / "datasets"), FIFTYONE_MODEL_ZOO_DIR=str(ROOT / "zoo"),
    FIFTYONE_CONFIG_PATH=str(ROOT / "config.json"), FIFTYONE_DO_NOT_TRACK="true", HF_HUB_OFFLINE="1",
    FIFTYONE_CLIP_ZEROSHOT_CACHE_DIR=str(ROOT / "embeddings"), FIFTYONE_DATABASE_VALIDATION="false")

import importlib.util  # noqa: E402

_spec = importlib.util.spec_from_file_location("cluster", Path(__file__).with_name("cluster.py"))
cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cluster)
MONGO = cluster.LocalMongo(ROOT / "mongo").start()
os.environ["FIFTYONE_DATABASE_URI"] = MONGO.uri
atexit.register(shutil.rmtree, ROOT, ignore_errors=True)  # runs last: after the mongod has stopped
atexit.register(MONGO.stop)

import fiftyone as fo  # noqa: E402
import fiftyone.brain as fob  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402
from fiftyone.utils.iou import compute_ious  # noqa: E402
from PIL import Image  # noqa: E402

import fiftyone_clip_zeroshot as fz  # noqa: E402
from fiftyone_clip_zeroshot.core.models.model import PACKAGED_MODELS  # noqa: E402
from fiftyone_clip_zeroshot.labeling.fo_models.embeddings import EMBEDDINGS_ZOO_NAME  # noqa: E402
from fiftyone_clip_zeroshot.labeling.fo_private import nearest_labels  # noqa: E402
from fiftyone_clip_zeroshot.plugin.install import install_zoo_source  # noqa: E402
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset  # noqa: E402
from fiftyone_clip_zeroshot.shapes.world import CLASSES  # noqa: E402

SEED = 9091  # held out: no training recipe, test or other benchmark renders this seed
K, MIN_OBJECTS, QUERIES = 10, 10, 9


def prompt_of(label: str) -> str:
    return f"a photo of a {label}"


def precision_at_k(dataset: fo.Dataset, label_ids: list[str], label: str) -> float:
    """The share of the first ``K`` candidates that overlap a ground-truth ``label`` by IoU >= 0.5."""
    patches = dataset.select_labels(ids=label_ids[:K], fields="candidates")
    hits = 0
    for sample in patches:
        truth = [d for d in dataset[sample.id].ground_truth.detections if d.label == label]
        for box in sample.candidates.detections:
            hits += bool(truth) and compute_ious([box], truth).max() >= 0.5
    return hits / K


def measure_precision(dataset: fo.Dataset, model: str, min_objects: int = MIN_OBJECTS
                      ) -> tuple[float, float, int, fz.IndexedObjects]:
    """Precision@10 brain-only and re-ranked, the classes counted, and what the index reused."""
    key = model.replace("-", "_")
    indexed = fz.index_objects(dataset, brain_key=key, model=model, progress=False)
    index = dataset.load_brain_results(key)
    counts = dataset.count_values("ground_truth.detections.label")
    labels = sorted(label for label, n in counts.items() if n >= min_objects)
    others = [prompt_of(c) for c in CLASSES]
    cosine, reranked = [], []
    for label in labels:
        cosine.append(precision_at_k(dataset, nearest_labels(index, prompt_of(label), K), label))
        found = fz.search(dataset, prompt_of(label), k=K, brain_key=key, prompts=others)
        reranked.append(precision_at_k(dataset, found.values("id"), label))
    if not labels:  # too few scenes for any class to reach MIN_OBJECTS
        return float("nan"), float("nan"), 0, indexed
    return float(np.mean(cosine)), float(np.mean(reranked)), len(labels), indexed


def synthetic_dataset(name: str, samples: int, per_sample: int, pool: np.ndarray,
                      rng: np.random.Generator) -> tuple[fo.Dataset, dict[str, np.ndarray]]:
    """``samples`` samples of ``per_sample`` random candidate boxes, with embeddings redrawn from ``pool``."""
    dataset = fo.Dataset(name)
    batch = []
    for i in range(samples):
        xy = rng.uniform(0, 0.8, (per_sample, 2))
        wh = rng.uniform(0.05, 0.2, (per_sample, 2))
        detections = [fo.Detection(label="candidate", bounding_box=[*p, *s], confidence=0.5)
                      for p, s in zip(xy.tolist(), wh.tolist())]
        batch.append(fo.Sample(filepath=f"/synthetic/{i:07d}.jpg", candidates=fo.Detections(detections=detections)))
    dataset.add_samples(batch, progress=False)
    rows = pool[rng.integers(0, len(pool), samples * per_sample)]
    rows = rows + rng.normal(0, 0.02, rows.shape).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    ids = dataset.values("id")
    return dataset, {sample_id: rows[i * per_sample:(i + 1) * per_sample] for i, sample_id in enumerate(ids)}


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6 if path.exists() else 0.0


def measure_scale(samples: int, per_sample: int, pool: np.ndarray, backends: list[str], model: str) -> list[str]:
    rng = np.random.default_rng(samples)
    start = time.perf_counter()
    dataset, embeddings = synthetic_dataset(f"scale-{samples}", samples, per_sample, pool, rng)
    made = time.perf_counter() - start
    patches = samples * per_sample
    lines = [f"{samples} samples x {per_sample} candidates = {patches} patches of {pool.shape[1]} floats, "
             f"{patches * pool.shape[1] * 4 / 1e6:.0f} MB of embeddings (dataset made in {made:.0f} s)"]
    process = psutil.Process()
    for backend in backends:
        kwargs = {"uri": str(ROOT / f"lancedb-{samples}")} if backend == "lancedb" else {}
        before = process.memory_info().rss
        start = time.perf_counter()
        fob.compute_similarity(dataset, patches_field="candidates", embeddings=embeddings,
                               model=EMBEDDINGS_ZOO_NAME, model_kwargs={"clip_model": model}, brain_key=backend,
                               backend=backend, progress=False, **kwargs)
        build = time.perf_counter() - start
        grown = (process.memory_info().rss - before) / 1e6
        index = dataset.load_brain_results(backend)
        brain, full = [], []
        for label in CLASSES[:QUERIES]:
            start = time.perf_counter()
            nearest_labels(index, prompt_of(label), 4 * K)
            brain.append(time.perf_counter() - start)
            start = time.perf_counter()
            len(fz.search(dataset, prompt_of(label), k=K, brain_key=backend))
            full.append(time.perf_counter() - start)
        lines.append(f"  {backend:<8} build {build:7.1f} s   memory +{grown:7.0f} MB   on disk "
                     f"{folder_mb(ROOT / f'lancedb-{samples}') if backend == 'lancedb' else 0:7.0f} MB   "
                     f"query: brain {1000 * statistics.median(brain):6.0f} ms, fz.search "
                     f"{1000 * statistics.median(full):6.0f} ms (median of {QUERIES})")
    dataset.delete()
    return lines


class PeakMemory:
    """The process's peak resident memory above its level at the start, sampled every 10 ms."""

    def __init__(self):
        self.process = psutil.Process()
        self.start = self.peak = self.process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_args) -> None:
        self._done.set()
        self._thread.join()

    @property
    def grown_mb(self) -> float:
        return (self.peak - self.start) / 1e6


def measure_stream(samples: int, per_sample: int, pool: np.ndarray, backends: list[str], model: str) -> list[str]:
    rng = np.random.default_rng(samples)
    dataset, _ = synthetic_dataset(f"stream-{samples}", samples, per_sample, pool, rng)
    image = ROOT / "stream.png"
    Image.new("RGB", (64, 48), (90, 120, 150)).save(image)
    dataset.set_values("filepath", [str(image)] * samples)
    clip = fz.load_model(model, device="cpu")
    clip.encode_batches = lambda count, *_args, **_kwargs: torch.from_numpy(pool[rng.integers(0, len(pool), count)])
    lines = [f"{samples} samples x {per_sample} candidates = {samples * per_sample} patches, "
             f"{samples * per_sample * pool.shape[1] * 4 / 1e6:.0f} MB of embeddings"]
    for backend in backends:
        kwargs = {"uri": str(ROOT / f"lancedb-stream-{samples}")} if backend == "lancedb" else {}
        start = time.perf_counter()
        with PeakMemory() as memory:
            fz.index_objects(dataset, brain_key=f"stream_{backend}", model=clip, backend=backend, cache=False,
                             progress=False, **kwargs)
        lines.append(f"  {backend:<8} index_objects {time.perf_counter() - start:7.1f} s   peak memory "
                     f"+{memory.grown_mb:7.0f} MB")
    dataset.delete()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--panel", action="store_true", help="every packaged test model")
    parser.add_argument("--model", nargs="+", default=["shapes-world"])
    parser.add_argument("--scenes", type=int, default=120)
    parser.add_argument("--scale", type=int, nargs="*", default=[], help="sample counts for the scale figures")
    parser.add_argument("--stream", type=int, nargs="*", default=[], help="sample counts for index_objects' memory")
    parser.add_argument("--backends", nargs="+", default=["sklearn", "lancedb"])
    parser.add_argument("--after-detect", action="store_true",
                        help="run detect (proposals) before each index, and count what the index reads back")
    parser.add_argument("--min-objects", type=int, default=MIN_OBJECTS, help="count classes with this many objects")
    args = parser.parse_args()
    install_zoo_source()
    print(f"{date.today()}  {platform.processor() or platform.machine()}, {os.cpu_count()} cores  "
          f"torch threads {torch.get_num_threads()}")
    models = list(PACKAGED_MODELS) if args.panel else args.model
    print(f"\nprecision@{K}, {args.scenes} held-out scenes (seed {SEED}), classes with >= {args.min_objects} objects")
    print(f"{'model':<22} {'classes':>7} {'brain (cosine)':>15} {'re-ranked':>10}")
    dataset = load_shapes_dataset("search", args.scenes, ROOT / "images", seed=SEED)
    start = time.perf_counter()
    fz.propose(dataset, progress=False)
    per_scene = dataset.count("candidates.detections") / len(dataset)
    print(f"candidates: {per_scene:.1f} per scene, proposed in {(time.perf_counter() - start) / len(dataset):.2f} "
          "s/scene")
    for model in models:
        start = time.perf_counter()
        if args.after_detect:  # what an earlier run leaves in the embedding store for the index
            fz.detect(dataset, [prompt_of(c) for c in CLASSES[:6]], label_field=f"found_{model.replace('-', '_')}",
                      method="proposals", model=model, heatmaps=False, progress=False)
        cosine, reranked, classes, indexed = measure_precision(dataset, model, args.min_objects)
        print(f"{model:<22} {classes:>7} {cosine:>15.3f} {reranked:>10.3f}   ({time.perf_counter() - start:.0f} s; "
              f"{indexed.reused} of {indexed.patches} embeddings read back from the store)", flush=True)
    pool = dataset.load_brain_results(models[0].replace("-", "_")).get_embeddings()[0].astype(np.float32)
    for samples in args.scale:
        print()
        for line in measure_scale(samples, round(per_scene), pool, args.backends, models[0]):
            print(line, flush=True)
    for samples in args.stream:
        print()
        for line in measure_stream(samples, round(per_scene), pool, args.backends, models[0]):
            print(line, flush=True)


if __name__ == "__main__":
    main()
