"""Objects found by text across a dataset: candidates stored per sample (``fz.propose``), a brain
similarity index of their embeddings (``fz.index_objects``, reading the embedding store back) and
the two-stage search (``fz.search``), on held-out shapes scenes and the packaged shapes-world CLIP."""

import subprocess
import sys

import fiftyone as fo
import numpy as np
import pytest
import torch

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.core.geometry.objectness import objectness
from fiftyone_clip_zeroshot.core.models.model import ClipModel
from fiftyone_clip_zeroshot.labeling.runs.jobs import LabelingError
from fiftyone_clip_zeroshot.labeling.runs.labels import pixel_xyxy
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset
from fiftyone_clip_zeroshot.shapes.world import CLASSES

SIZE = dict(width=320, height=240)
WH = (SIZE["width"], SIZE["height"])
TRIPLES = ("blue star", "yellow square", "blue cross", "green star")


@pytest.fixture(scope="module")
def scenes(tmp_root):
    """Eight held-out scenes with their candidates proposed."""
    dataset = load_shapes_dataset("search", 8, tmp_root / "images" / "search", seed=7707, **SIZE)
    fz.propose(dataset, progress=False)
    yield dataset
    dataset.delete()


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    low, high = np.maximum(a[:, None, :2], b[None, :, :2]), np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _index(scenes) -> None:
    """The index "objects" of the scenes' candidates, built once whichever test asks first."""
    if "objects" not in scenes.list_brain_runs():
        fz.index_objects(scenes, brain_key="objects", model="shapes-world", progress=False)


def test_objectness_ranks_a_shape_above_a_cut_through_its_ground():
    image = torch.full((3, 120, 160), 200, dtype=torch.uint8)
    image[:, 40:80, 50:90] = torch.tensor([220, 30, 30], dtype=torch.uint8)[:, None, None]
    scores = objectness(image, np.array([[50, 40, 90, 80], [100, 10, 150, 60], [0, 0, 160, 120]]))
    assert scores[0] > 0.9 and scores[1] < 0.1 and scores[2] == 0.0


def test_propose_over_a_dataset_stores_each_images_candidates_best_first(scenes):
    sample = scenes.first()
    stored = sample.candidates.detections
    direct = fz.propose(sample.filepath)
    assert len(stored) == len(direct) > 0 and {d.label for d in stored} == {"candidate"}
    confidences = [d.confidence for d in stored]
    assert confidences == sorted(confidences, reverse=True) and 0 <= min(confidences) <= max(confidences) <= 1
    boxes = pixel_xyxy(stored, WH)
    assert np.allclose(np.sort(boxes, 0), np.sort(direct, 0))
    truth = pixel_xyxy(sample.ground_truth.detections, WH)
    assert (_iou(truth, boxes).max(1) >= 0.5).all(), "every object has a candidate"
    with pytest.raises(LabelingError, match="already holds"):
        fz.propose(scenes, label_field="filepath", progress=False)


def test_index_reuses_the_store_and_search_ranks_the_prompts_patches_first(scenes, zoo_source, shapes_model):
    fz.detect(scenes, list(CLASSES[:4]), label_field="found", method="proposals", model=shapes_model,
              progress=False)
    built = fz.index_objects(scenes, brain_key="objects_detected", model="shapes-world", progress=False)
    total = scenes.count("candidates.detections")
    assert built.patches == total and built.reused + built.encoded == total
    assert built.reused > 0, "detect's proposals were read back from the store"
    again = fz.index_objects(scenes, brain_key="objects_again", model="shapes-world", progress=False)
    assert again.encoded == 0 and again.reused == total
    assert np.allclose(again.index.get_embeddings()[0], built.index.get_embeddings()[0], atol=1e-3)

    hits = 0
    for name in TRIPLES:  # the classes with three instances in these scenes
        found = fz.search(scenes, f"a photo of a {name}", k=3, brain_key="objects_detected",
                          prompts=[f"a photo of a {c}" for c in CLASSES])
        assert len(found) == 3
        for patch in found:
            truth = [d for d in scenes[patch.sample_id].ground_truth.detections if d.label == name]
            hits += bool(truth) and _iou(pixel_xyxy([patch.candidates], WH), pixel_xyxy(truth, WH)).max() >= 0.5
    assert hits >= 10, f"{hits} of the 12 first patches show their prompt"
    assert len(fz.search(scenes, "a photo of a blue star", k=5, brain_key="objects_detected",
                         confidence_thresh=1.01)) == 0


def test_search_on_a_view_finds_the_nearest_patches_of_the_view(scenes, zoo_source):
    """Not the whole index's nearest, of which the view may hold none."""
    _index(scenes)
    prompt = "a photo of a blue star"
    everywhere_ids = fz.search(scenes, prompt, k=8, brain_key="objects").values("id")
    everywhere = set(fz.search(scenes, prompt, k=8, brain_key="objects").values("sample_id"))
    elsewhere = [sample_id for sample_id in scenes.values("id") if sample_id not in everywhere]
    view = scenes.select(elsewhere[:1] or scenes.values("id")[-1:])
    found = fz.search(view, prompt, k=3, brain_key="objects")
    assert len(found) == 3 and set(found.values("sample_id")) == set(view.values("id"))
    assert fz.search(scenes, prompt, k=8, brain_key="objects").values("id") == everywhere_ids  # the index restored


def test_an_index_answers_text_queries_after_a_restart(scenes, zoo_source):
    _index(scenes)
    code = ("import fiftyone as fo; d = fo.load_dataset('search'); "
            "v = d.to_patches('candidates').sort_by_similarity('a photo of a red circle', k=3, brain_key='objects'); "
            "print(len(v), v.first().candidates.label)")
    scenes.persistent = True
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    finally:
        scenes.persistent = False
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["3", "candidate"]


def test_index_objects_says_what_is_missing(scenes, zoo_source):
    with pytest.raises(LabelingError, match="no fo.Detections field 'boxes'.*fz.propose"):
        fz.index_objects(scenes, label_field="boxes", progress=False)
    with pytest.raises(LabelingError, match="no brain run 'nothing'"):
        fz.search(scenes, "a red circle", brain_key="nothing")
    _index(scenes)
    before = scenes.values("candidates.detections.id", unwind=True)
    with pytest.raises(LabelingError, match="indexed by brain run"):
        fz.propose(scenes, progress=False)
    assert scenes.values("candidates.detections.id", unwind=True) == before
    with pytest.raises(LabelingError, match="'qdrant' cannot run here"):
        fz.index_objects(scenes, brain_key="on_a_server", backend="qdrant", progress=False)


@pytest.mark.parametrize("key", ["my objects", "2nd", "", None])
def test_a_brain_key_fiftyone_would_refuse_is_refused_before_any_encoding(key, scenes, zoo_source, monkeypatch):
    def encoding(*_args, **_kwargs):
        raise AssertionError("encoded before refusing the key")

    monkeypatch.setattr(ClipModel, "encode_batches", encoding)
    with pytest.raises(LabelingError, match="brain_key must be a Python identifier"):
        fz.index_objects(scenes, brain_key=key, model="shapes-world", progress=False)


def test_the_index_form_refuses_a_brain_key_fiftyone_would_refuse(tmp_root, zoo_source, plugin_dir):
    import fiftyone.operators as foo

    dataset = load_shapes_dataset("search-key", 1, tmp_root / "images" / "search-key", seed=7709, **SIZE)
    dataset.add_sample_field("boxes", fo.EmbeddedDocumentField, embedded_doc_type=fo.Detections)
    with pytest.raises(foo.executor.ExecutionError, match="Path: brain_key.*Python identifier"):
        foo.execute_operator("@clip-zeroshot/fiftyone-clip-zeroshot/index_objects", ctx=dict(
            view=dataset.view(), params=dict(label_field="boxes", brain_key="my objects", backend="sklearn",
                                             model="shapes-world", device="cpu", delegate=False,
                                             view_target="DATASET"))).raise_exceptions()
    assert not dataset.list_brain_runs()
    dataset.delete()


@pytest.mark.parametrize("backend", ["sklearn", "lancedb"])
def test_an_index_is_built_chunk_by_chunk_and_a_stopped_run_leaves_none(backend, scenes, zoo_source, tmp_root,
                                                                       monkeypatch):
    """Rows go to the index every ``ADD_EVERY`` or so, never all held until the end."""
    from fiftyone_clip_zeroshot.labeling.object_search import index as search
    from fiftyone_clip_zeroshot.labeling.object_search import index_sinks

    pytest.importorskip(backend)
    kwargs = {"uri": str(tmp_root / "lancedb-chunks")} if backend == "lancedb" else {}
    sink = index_sinks.LanceDBSink if backend == "lancedb" else index_sinks.IndexSink
    added = []
    add = sink.add
    monkeypatch.setattr(search, "ADD_EVERY", 12)
    monkeypatch.setattr(sink, "add", lambda self, rows, *ids: added.append(len(rows)) or add(self, rows, *ids))
    built = fz.index_objects(scenes, brain_key=f"chunks_{backend}", model="shapes-world", backend=backend,
                             progress=False, **kwargs)
    most = max(len(s.candidates.detections) for s in scenes)
    assert len(added) > 1 and max(added) < 12 + most and sum(added) == scenes.count("candidates.detections")
    assert built.patches == sum(added) == built.index.total_index_size
    assert sorted(built.index.get_embeddings()[2]) == sorted(scenes.values("candidates.detections.id", unwind=True))
    _index(scenes)
    prompt = "a photo of a blue star"
    assert fz.search(scenes, prompt, k=5, brain_key=f"chunks_{backend}").values("candidates.id") == \
        fz.search(scenes, prompt, k=5, brain_key="objects").values("candidates.id")

    def failing(self, *args):
        if added:  # after the first chunk went in
            raise RuntimeError("the backend went away")
        added.append(1)
        add(self, *args)

    added.clear()
    monkeypatch.setattr(sink, "add", failing)
    with pytest.raises(RuntimeError, match="went away"):
        fz.index_objects(scenes, brain_key=f"stopped_{backend}", model="shapes-world", backend=backend,
                         progress=False, **kwargs)
    assert f"stopped_{backend}" not in scenes.list_brain_runs()
    if backend == "lancedb":
        import lancedb

        assert list(lancedb.connect(kwargs["uri"]).table_names()) == [f"fiftyone-search-chunks_{backend}"]
    scenes.delete_brain_run(f"chunks_{backend}")


def test_the_zoo_embedding_model_embeds_prompts_and_images_as_the_package_does(zoo_source, shapes_model):
    import fiftyone.zoo as foz

    model = foz.load_zoo_model("clip-zeroshot-embeddings", clip_model="shapes-world", device="cpu")
    assert model.can_embed_prompts and model.has_embeddings
    prompts = model.embed_prompts(["a red circle", "a blue square"])
    assert prompts.shape == (2, shapes_model.embedding_dim)
    assert np.allclose(prompts, shapes_model.encode_text(["a red circle", "a blue square"]).numpy(), atol=1e-6)
    image = np.zeros((40, 60, 3), np.uint8)
    assert np.allclose(np.linalg.norm(model.embed_all([image, image[:20]]), axis=1), 1, atol=1e-5)


def test_a_lancedb_index_on_disk_serves_the_same_search(scenes, zoo_source, tmp_root):
    pytest.importorskip("lancedb")
    _index(scenes)
    built = fz.index_objects(scenes, brain_key="objects_lancedb", model="shapes-world", backend="lancedb",
                             uri=str(tmp_root / "lancedb"), progress=False)
    assert built.encoded == 0, "every embedding was read back from the store"
    prompts = [f"a photo of a {c}" for c in CLASSES]
    on_disk = fz.search(scenes, "a photo of a blue star", k=3, brain_key="objects_lancedb", prompts=prompts)
    in_memory = fz.search(scenes, "a photo of a blue star", k=3, brain_key="objects", prompts=prompts)
    assert on_disk.values("id") == in_memory.values("id")


def test_the_propose_and_index_operators_run_from_the_plugin(tmp_root, zoo_source, plugin_dir):
    import fiftyone.operators as foo

    dataset = load_shapes_dataset("search-ops", 2, tmp_root / "images" / "search-ops", seed=7708, **SIZE)
    plugin = "@clip-zeroshot/fiftyone-clip-zeroshot"
    foo.execute_operator(f"{plugin}/propose_candidates", ctx=dict(view=dataset.view(), params=dict(
        label_field="boxes", delegate=False, view_target="DATASET"))).raise_exceptions()
    assert dataset.count("boxes.detections") == sum(len(fz.propose(s.filepath)) for s in dataset)
    result = foo.execute_operator(f"{plugin}/index_objects", ctx=dict(view=dataset.view(), params=dict(
        label_field="boxes", brain_key="boxes_index", backend="sklearn", model="shapes-world", device="cpu",
        delegate=False, view_target="DATASET")))
    result.raise_exceptions()
    assert dataset.get_brain_info("boxes_index").config.patches_field == "boxes"
    assert len(dataset.to_patches("boxes").sort_by_similarity("a photo of a blue star", k=2,
                                                                brain_key="boxes_index")) == 2
    dataset.delete()


def test_the_panel_opens_an_inspected_candidates_field_as_patches_best_first(scenes, plugin_dir):
    from test_panel import _call, _state_after

    state = dict(inspect_field="candidates", model="shapes-world", method="proposals", target="DATASET")
    assert _state_after(_call(scenes, "on_change_field", state, value="candidates")).get("candidates") is True
    shown = _call(scenes, "on_candidate_patches", state).to_json()["executor"]["requests"]
    assert any(r["operator_uri"] == "set_view" for r in shown)
