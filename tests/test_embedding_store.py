"""Embed once, prompt many (``core.embedding_store``): a warm store gives the results of no store,
a rerun with new prompts encodes only what they newly pick, no stale entry is ever served, and
a damaged, shared, read-only or interrupted store never breaks a run."""

import copy
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import warnings

import fiftyone as fo
import numpy as np
import pytest
import torch
from PIL import Image

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.app.panel import embedded_text
from fiftyone_clip_zeroshot.core import embedding_store
from fiftyone_clip_zeroshot.core.embedding_store import EmbeddingStore, StoreWarning, open_store
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.core.models.model import resolve_model_path
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset
from fiftyone_clip_zeroshot.shapes.world import render_scene

PROMPTS = ["purple circle", "green triangle"]  # in _image(), and so are the new ones
NEW_PROMPTS = ["blue cross", "blue circle"]
FAST = dict(window_scales=(0.2, 0.5), window_stride=0.5, context_scales=(0.25, 0.5), heatmap_size=64)


def _image(index: int = 3) -> np.ndarray:
    return np.asarray(render_scene(7, index, 320, 240, max_objects=4).image)


def _assert_same(got, want, atol: float = 1e-4):
    assert [r.prompt for r in got] == [r.prompt for r in want]
    for a, b in zip(got, want):
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=atol)
        np.testing.assert_allclose(a.detections.xyxy, b.detections.xyxy, atol=1e-3)
        np.testing.assert_array_equal(a.detections.class_id, b.detections.class_id)
        np.testing.assert_allclose(a.detections.confidence, b.detections.confidence, atol=atol)


def _run(model, prompts, cache, method, image=None, **options):
    options = {**FAST, **options}
    results = fz.localize(_image() if image is None else image, prompts, model, method=method, cache=cache,
                          confidence_thresh=0.3, **options)
    return results, results[0].crops


@pytest.mark.parametrize("method", METHODS)
def test_a_warm_store_gives_the_results_of_no_store_and_new_prompts_encode_little(method, shapes_model, tmp_path):
    """At the method's default windows and contexts (the share of new crops depends on them)."""
    cache = str(tmp_path / "store")
    run = dict(heatmap_size=64, window_scales=None, window_stride=None, context_scales=None)
    plain, counted = _run(shapes_model, PROMPTS, False, method, **run)
    cold, cold_crops = _run(shapes_model, PROMPTS, cache, method, **run)
    warm, warm_crops = _run(shapes_model, PROMPTS, cache, method, **run)
    assert sum(len(r.detections) for r in plain) > 0
    assert counted.stored == 0 and cold_crops.computed + cold_crops.stored == counted.computed
    assert warm_crops.computed == 0 and warm_crops.stored == counted.computed
    _assert_same(cold, plain)
    _assert_same(warm, plain)

    new_plain, new_counted = _run(shapes_model, NEW_PROMPTS, False, method, **run)
    new_warm, new_crops = _run(shapes_model, NEW_PROMPTS, cache, method, **run)
    _assert_same(new_warm, new_plain)
    assert new_crops.computed + new_crops.stored == new_counted.computed
    assert new_crops.computed <= 0.5 * new_counted.computed, new_crops  # what the new prompts newly pick
    if method == "sliding_window":
        assert new_crops.computed <= 0.1 * new_counted.computed, new_crops


@pytest.fixture(scope="module")
def half_model(shapes_model):
    """The shapes CLIP in float16, as a GPU runs it (the store then keeps float16 rows)."""
    return dataclasses.replace(shapes_model, model=copy.deepcopy(shapes_model.model).half(), dtype=torch.float16,
                               _text_cache={}, _fingerprint=None)


@pytest.mark.slow  # float16 on the CPU is slow
@pytest.mark.parametrize("method", METHODS)
def test_a_float16_store_gives_the_results_of_no_store_within_1e_3(method, half_model, tmp_path):
    cache = str(tmp_path / "store")
    plain, counted = _run(half_model, PROMPTS, False, method)
    _run(half_model, PROMPTS, cache, method)
    warm, crops = _run(half_model, PROMPTS, cache, method)
    assert crops.computed == 0 and crops.stored == counted.computed
    with np.load(_entries(tmp_path / "store")[0]) as data:
        floats = {data[k].dtype for k in data.files if k.startswith("rows") and data[k].dtype != np.float64}
    assert floats == {np.dtype(np.float16)}  # embeddings as float16; the proposals' boxes stay float64
    _assert_same(warm, plain, atol=1e-3)


@pytest.mark.parametrize("method", ["proposals", "dense"])
def test_with_every_candidate_embedded_new_prompts_encode_nothing(method, shapes_model, tmp_path):
    """``embed_all_candidates``: a cold run costs more, its results stay those of no store, and
    whatever later prompts pick is already there."""
    cache = str(tmp_path / "store")
    _, counted = _run(shapes_model, PROMPTS, False, method)
    cold, cold_crops = _run(shapes_model, PROMPTS, cache, method, embed_all_candidates=True)
    _assert_same(cold, _run(shapes_model, PROMPTS, False, method)[0])
    assert cold_crops.computed > counted.computed
    new_plain, _ = _run(shapes_model, NEW_PROMPTS, False, method)
    new_warm, new_crops = _run(shapes_model, NEW_PROMPTS, cache, method, embed_all_candidates=True)
    assert new_crops.computed == 0 and new_crops.stored > 0
    _assert_same(new_warm, new_plain)


def test_no_stale_entry_is_served(shapes_model, tmp_path):
    """An edited image, other weights in the same folder, or an option that moves a crop all miss."""
    cache = str(tmp_path / "store")
    _, first = _run(shapes_model, PROMPTS, cache, "sliding_window")
    edited = _image().copy()
    edited[100:110, 100:110] = 255 - edited[100:110, 100:110]
    _, crops = _run(shapes_model, PROMPTS, cache, "sliding_window", image=edited)
    assert crops.stored == 0 and crops.computed == first.computed

    _, crops = _run(shapes_model, PROMPTS, cache, "sliding_window", window_stride=0.4)
    assert crops.computed > 0  # new windows; the candidates' crops are the same and are read back

    _, occluded = _run(shapes_model, PROMPTS, cache, "occlusion")
    _, refilled = _run(shapes_model, PROMPTS, cache, "occlusion", occluder_fill="black")
    assert occluded.computed > 0 and 0 < refilled.computed < occluded.computed + occluded.stored

    folder = tmp_path / "checkpoint"
    shapes_model.model.save_pretrained(folder)
    shapes_model.tokenizer.save_pretrained(folder)
    shutil.copy(os.path.join(resolve_model_path("shapes-world"), "preprocessor_config.json"), folder)
    _, crops = _run(fz.load_model(str(folder), device="cpu"), PROMPTS, cache, "sliding_window")
    assert crops.computed == 0  # the same weights from another folder: the same entries
    retrained = fz.load_model(str(folder), device="cpu")
    with torch.no_grad():
        retrained.model.visual_projection.weight.mul_(1.01)
    retrained.model.save_pretrained(folder)  # new weights in the same folder
    _, crops = _run(fz.load_model(str(folder), device="cpu"), PROMPTS, cache, "sliding_window")
    assert crops.stored == 0 and crops.computed == first.computed


def _store_warnings(caught) -> list:
    return [w for w in caught if issubclass(w.category, StoreWarning)]


def _entries(root) -> list:
    return sorted(p for p in root.rglob("*.npz"))


def test_a_damaged_entry_is_recomputed_and_replaced_with_one_warning(shapes_model, tmp_path):
    root = tmp_path / "store"
    _, first = _run(shapes_model, PROMPTS, str(root), "proposals")
    (entry,) = _entries(root)
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    with pytest.warns(StoreWarning, match="damaged") as caught:
        _, crops = _run(shapes_model, PROMPTS, str(root), "proposals")
        _run(shapes_model, PROMPTS, str(tmp_path / "other"), "proposals", image=_image(1))
    assert len(_store_warnings(caught)) == 1 and crops.stored == 0 and crops.computed == first.computed
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        _, crops = _run(shapes_model, PROMPTS, str(root), "proposals")
    assert crops.computed == 0  # replaced whole

    data = dict(np.load(entry))
    data["rows0"] = data["rows0"] + 1  # a readable file whose rows are not what was written
    np.savez(entry, **data)
    with pytest.warns(StoreWarning, match="checksum"):
        _, crops = _run(shapes_model, PROMPTS, str(root), "proposals")
    assert crops.stored == 0


@pytest.mark.parametrize("trouble", ["read-only", "disk full"])
def test_a_store_that_cannot_be_written_warns_once_and_the_run_goes_on(trouble, shapes_model, tmp_path, monkeypatch):
    if trouble == "read-only":
        (tmp_path / "file").write_text("not a folder")
        cache = str(tmp_path / "file" / "store")  # nothing can be created under a file, even by root
    else:
        cache = str(tmp_path / "store")

        def full(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(embedding_store.os, "replace", full)
    plain, _ = _run(shapes_model, PROMPTS, False, "dense")
    with pytest.warns(StoreWarning, match="cannot write") as caught:
        results, crops = _run(shapes_model, PROMPTS, cache, "dense")
        _run(shapes_model, PROMPTS, cache, "dense", image=_image(1))
    assert len(_store_warnings(caught)) == 1 and crops.computed > 0
    _assert_same(results, plain)
    assert not list((tmp_path).rglob("*.tmp"))


def test_ctrl_c_while_writing_leaves_no_entry(shapes_model, tmp_path, monkeypatch):
    root = tmp_path / "store"
    real_replace = embedding_store.os.replace

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(embedding_store.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _run(shapes_model, PROMPTS, str(root), "proposals")
    assert not _entries(root) and not list(root.rglob("*.tmp"))
    monkeypatch.setattr(embedding_store.os, "replace", real_replace)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        _, crops = _run(shapes_model, PROMPTS, str(root), "proposals")
    assert crops.stored == 0 and crops.computed > 0 and len(_entries(root)) == 1


_WRITER = """
import sys
import numpy as np
import torch
from fiftyone_clip_zeroshot.core.embedding_store import EmbeddingStore
store = EmbeddingStore(sys.argv[1])
seed = int(sys.argv[2])
for step in range(40):
    entry = store.entry("0f" * 12, "ab" * 16, torch.float32)
    keys = np.array([[seed, step]])
    entry.add("pooled", keys, torch.full((1, 64), float(seed * 1000 + step)))
    entry.add("pooled", np.array([[0, step]]), torch.zeros(1, 64))  # a row both processes write
    entry.flush()
"""


def test_two_processes_writing_one_entry_never_damage_it(tmp_path):
    root = tmp_path / "store"
    writers = [subprocess.Popen([sys.executable, "-c", _WRITER, str(root), str(seed)]) for seed in (1, 2)]
    assert all(w.wait(timeout=120) == 0 for w in writers)
    store = EmbeddingStore(root)
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        entry = store.entry("0f" * 12, "ab" * 16, torch.float32)
        keys = np.array([[seed, step] for seed in (1, 2) for step in range(40)])
        found, missing = entry.lookup("pooled", keys)
    assert len(missing) < len(keys)  # the last writer's rows, whole; another's may be overwritten, never mixed
    for index, key in enumerate(keys):
        if index not in missing:
            assert np.all(found[index] == key[0] * 1000 + key[1])
    assert not list(root.rglob("*.tmp"))


def test_the_store_reports_its_size_evicts_the_least_recently_used_and_clears(shapes_model, tmp_path):
    root = tmp_path / "store"
    for index in (0, 1, 3):
        _run(shapes_model, PROMPTS, str(root), "dense", image=_image(index))
    info = fz.cache_info(str(root))
    assert info["files"] == 3 and info["bytes"] == sum(p.stat().st_size for p in _entries(root))
    assert list(info["models"]) == [shapes_model.fingerprint]
    oldest = min(_entries(root), key=lambda p: p.stat().st_mtime)
    os.utime(oldest, (1, 1))
    freed = EmbeddingStore(root).trim(max_bytes=info["bytes"] - 1)
    assert freed > 0 and not oldest.exists() and len(_entries(root)) == 2
    assert fz.clear_cache(str(root)) == 2 and fz.cache_info(str(root))["files"] == 0
    with pytest.raises(fz.OptionsError, match="file://"):
        fz.localize(_image(), PROMPTS, shapes_model, cache="s3://bucket/store")
    assert open_store(False) is None and open_store(f"file://{root}").root == root


def test_detect_reruns_with_new_prompts_from_the_store_and_says_so(shapes_model, tmp_root, tmp_path, capsys,
                                                                    monkeypatch):
    monkeypatch.setenv(embedding_store.CACHE_DIR_ENV, str(tmp_path / "default"))  # the default store, empty
    dataset = load_shapes_dataset("store", 3, tmp_root / "images" / "store", seed=5, width=240, height=180)
    assert embedded_text(dataset.view(), "shapes-world") == ""
    run = dict(model=shapes_model, method="sliding_window", label_field="clip", **FAST)
    digested = []
    monkeypatch.setattr(embedding_store, "_digest_of", lambda pixels: digested.append(1) or "ab" * 16)
    fz.detect(dataset, PROMPTS, **run)
    assert len(digested) == 3  # once per image: its store entry and its note share one digest
    monkeypatch.undo()
    monkeypatch.setenv(embedding_store.CACHE_DIR_ENV, str(tmp_path / "default"))
    fz.clear_cache()
    fz.detect(dataset, PROMPTS, **run)
    first = capsys.readouterr().out
    assert embedded_text(dataset.view(), "shapes-world").startswith("Embedded: 3 of 3 samples under `shapes-world`")
    assert embedded_text(dataset.limit(2), "shapes-world").startswith("Embedded: 2 of 2 samples")
    assert embedded_text(dataset.view(), "shapes-photo") == ""  # no run loaded that model
    fz.detect(dataset, NEW_PROMPTS, **run)
    second = capsys.readouterr().out
    assert "0 read from the embedding store" in first
    encoded, stored = (int(n.replace(",", "")) for n in
                       re.search(r"([\d,]+) crops encoded, ([\d,]+) read", second).groups())
    assert stored > 2 * encoded  # at these few windows; test_a_warm_store... measures the defaults
    edited = dataset.first().filepath
    Image.open(edited).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(edited)
    assert embedded_text(dataset.view(), "shapes-world").startswith("Embedded: 2 of 3 samples")
    fo.delete_dataset("store")


def _foreign_files(root) -> list:
    """A user's own files under a folder they made the store's root, some in the store's own folders."""
    paths = [root / "mine.npz", root / "results" / "mine.npz", root / "v1" / "mine.npz",
             root / "v1" / ("0f" * 12) / "mine.npz", root / "v1" / ("0f" * 12) / "ab" / "mine.npz",
             root / "v1" / ("0f" * 12) / "cd" / ("ab" * 16 + ".npz"), root / "v1" / "notes" / "ab" / "mine.json",
             root / "v1" / "results" / "ab" / ("ab" * 16 + ".npz")]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(10_000))
        os.utime(path, (1, 1))  # older than any entry: first in line, were they the store's
    return paths


def _write_entry(store: EmbeddingStore, digest: str, floats: int = 1000) -> None:
    entry = store.entry("0f" * 12, digest, torch.float32)
    entry.add("pooled", np.array([[1, 2]]), torch.ones(1, floats))
    entry.flush()


def test_a_foreign_file_under_the_root_survives_every_store_operation(shapes_model, tmp_path):
    root = tmp_path / "store"
    foreign = _foreign_files(root)
    store = EmbeddingStore(root, max_bytes=1)  # every write trims
    _write_entry(store, "ab" * 16)
    _write_entry(store, "cd" * 16)
    store.note("file:x.png", {"digest": "ab" * 16})
    _run(shapes_model, PROMPTS, str(root), "dense")
    info = fz.cache_info(str(root))
    assert info["files"] == 1 and info["notes"] == 1  # the run's entry (the earlier ones trimmed), the note
    listed = store.files()
    assert not {path for path, _ in listed} & {str(path) for path in foreign}
    assert info["bytes"] == sum(stat.st_size for _, stat in listed)
    assert list(info["models"]) == [shapes_model.fingerprint]
    store.trim(max_bytes=0)
    assert fz.clear_cache(str(root)) == 0 and fz.clear_cache(str(root), older_than_days=0) == 0
    assert all(path.exists() for path in foreign)
    with pytest.raises(ValueError, match="fingerprint"):
        store.entry("../elsewhere", "ab" * 16, torch.float32)


@pytest.mark.parametrize("method", METHODS)
def test_every_geometry_option_changed_between_two_runs_is_a_miss_never_an_error(method, shapes_model, tmp_path):
    """Rows of another shape (``dense_upscale``) or crops cut elsewhere sit beside the first run's."""
    cache = str(tmp_path / "store")
    changed = dict(window_scales=(0.25, 0.6), window_stride=0.4, context_scales=(0.3, 0.6), context_stride=0.4,
                   occluder_size=0.3, occluder_stride=0.4, occluder_fill="black", dense_tile=0.4, dense_stride=0.4,
                   dense_upscale=2.0, proposal_scales=(150,), proposal_side=200, proposal_tile=160,
                   verify_margins=(0.0, 0.15), heatmap_size=48)
    _run(shapes_model, PROMPTS, cache, method)
    again, crops = _run(shapes_model, PROMPTS, cache, method, **changed)
    _assert_same(again, _run(shapes_model, PROMPTS, False, method, **changed)[0])
    assert crops.computed > 0
    warm, crops = _run(shapes_model, PROMPTS, cache, method)  # both shapes kept
    assert crops.computed == 0
    _assert_same(warm, _run(shapes_model, PROMPTS, False, method)[0])


_SHORT_RUN = """
import sys
import numpy as np
import torch
from fiftyone_clip_zeroshot.core import embedding_store
embedding_store.TRIM_EVERY = 1.0  # no trim on writing: only the trims on opening and at exit
store = embedding_store.open_store(sys.argv[1])
entry = store.entry("0f" * 12, sys.argv[2], torch.float32)
entry.add("pooled", np.array([[1, 2]]), torch.ones(1, 25000))
entry.flush()
store.note_file(sys.argv[1] + "/../image.png", sys.argv[2])
"""


@pytest.mark.slow  # processes that each import torch
def test_short_lived_processes_keep_the_cap(tmp_path):
    """Each process writes one entry and a note and exits; the cap (2.5 of them) holds after every one."""
    root = tmp_path / "store"
    (tmp_path / "image.png").write_bytes(b"png")
    subprocess.run([sys.executable, "-c", _SHORT_RUN, str(tmp_path / "probe"), "ab" * 16], check=True, timeout=120)
    cap = 2.5 * sum(stat.st_size for _, stat in EmbeddingStore(tmp_path / "probe").files())
    env = {**os.environ, embedding_store.CACHE_SIZE_ENV: str(cap / 1e9)}
    for index in range(9):
        subprocess.run([sys.executable, "-c", _SHORT_RUN, str(root), f"{index:02x}" * 16], env=env, check=True,
                       timeout=120)
        assert sum(stat.st_size for _, stat in EmbeddingStore(root).files()) <= cap
    assert fz.cache_info(str(root))["files"] >= 1


_TRIMMER = """
import sys, time
from fiftyone_clip_zeroshot.core.embedding_store import EmbeddingStore, clear_cache
store = EmbeddingStore(sys.argv[1], max_bytes=1)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    store.trim()
    clear_cache(sys.argv[1])
"""


@pytest.mark.slow  # processes that each import torch
def test_two_processes_trimming_while_a_third_writes_fail_nothing(tmp_path):
    root = tmp_path / "store"
    trimmers = [subprocess.Popen([sys.executable, "-c", _TRIMMER, str(root), "6"]) for _ in range(2)]
    store = EmbeddingStore(root, max_bytes=20_000)  # this writer trims too, every other entry
    with warnings.catch_warnings():
        warnings.simplefilter("error", StoreWarning)
        for index in range(300):
            _write_entry(store, f"{index % 256:02x}" * 16)
            store.note(f"file:{index}.png", {"digest": f"{index % 256:02x}" * 16})
            cache_info = fz.cache_info(str(root))
            assert cache_info["files"] >= 0
    assert all(t.wait(timeout=120) == 0 for t in trimmers)


def test_the_store_options_say_what_is_wrong_before_any_work(shapes_model, tmp_path, monkeypatch):
    with pytest.raises(fz.OptionsError, match="names no store"):
        fz.cache_info(False)
    with pytest.raises(fz.OptionsError, match="names no store"):
        fz.clear_cache(False)
    for text in ("5GB", "0", "-1", "nan"):
        monkeypatch.setenv(embedding_store.CACHE_SIZE_ENV, text)
        with pytest.raises(fz.OptionsError, match="positive number of gigabytes"):
            fz.localize(_image(), PROMPTS, shapes_model, cache=str(tmp_path))
    monkeypatch.setenv(embedding_store.CACHE_SIZE_ENV, "0.5")
    assert open_store(str(tmp_path)).max_bytes == 500_000_000
    with pytest.raises(fz.OptionsError, match="this machine"):
        fz.localize(_image(), PROMPTS, shapes_model, cache="file://server/share/store")
    assert open_store(f"file://{tmp_path}/a%20store").root == tmp_path / "a store"
    assert open_store(f"file://localhost{tmp_path}/s").root == tmp_path / "s"
