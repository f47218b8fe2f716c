"""The three ways users run the plugin, against a real embedded MongoDB: detect(), operators, apply_model."""

import os
import re
from pathlib import Path

import fiftyone as fo
import fiftyone.core.models as fom
import fiftyone.operators as foo
import fiftyone.plugins as fop
import numpy as np
import pytest
from fiftyone.operators.executor import ExecutionError
from PIL import Image

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.labeling.fo_models.factory import data_loader_ready
from fiftyone_clip_zeroshot.labeling.runs.jobs import LabelingError
from fiftyone_clip_zeroshot.labeling.runs.labels import to_heatmap
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun, run_key
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset

REPO = Path(__file__).resolve().parents[1]
PROMPTS = ["red circle", "blue square"]
TYPED = ", ".join(PROMPTS)  # as the operator form sends them: one text
OPERATOR = "@clip-zeroshot/fiftyone-clip-zeroshot/detect"
FAST = dict(window_scales=(0.2, 0.4), window_stride=0.5)  # few windows: these tests check plumbing


@pytest.fixture()
def dataset(tmp_root, request):
    ds = load_shapes_dataset(f"shapes-{request.node.name}", 4, tmp_root / "images" / request.node.name, seed=3,
                             width=320, height=240)
    yield ds
    ds.delete()


def _counts(samples, field):
    return [len(d.detections) if d is not None else None for d in samples.values(field)]


def test_detect_writes_detections_heatmaps_and_run_info(dataset, shapes_model):
    fields = fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", confidence_thresh=0.0,
                       progress=False, **FAST)
    assert fields == ["clip", "clip_heatmap_red_circle", "clip_heatmap_blue_square"]
    for sample in dataset:
        detections = sample["clip"].detections
        assert detections and {d.label for d in detections} <= set(PROMPTS)
        assert all(d.method == "sliding_window" and 0 <= d.confidence <= 1 for d in detections)
        for field in fields[1:]:
            heatmap = sample[field]
            assert isinstance(heatmap, fo.Heatmap)
            values = heatmap.map if heatmap.map is not None else None
            assert values is None or (values.min() >= 0 and values.max() <= 1 and heatmap.range == [0.0, 1.0])
    config = dataset.get_run_info(run_key("clip")).config
    assert config.prompts == PROMPTS and config.model == "shapes-world"
    assert config.method == config.options["method"] == "sliding_window"
    assert config.options["batch_size"] == shapes_model.batch_size  # the value used, not None
    assert config.options["refine_boxes"] is True


def test_large_heatmaps_go_to_unique_pngs_and_rerun_replaces_them(dataset, shapes_model, tmp_root):
    kwargs = dict(model=shapes_model, label_field="clip", confidence_thresh=0.0, progress=False,
                  heatmap_root=tmp_root / "maps", heatmap_size=96, **FAST)
    fz.detect(dataset, PROMPTS, **kwargs)
    first = dataset.values("clip_heatmap_red_circle.map_path")
    assert all(p and Path(p).is_file() for p in first)
    assert dataset.first().clip_heatmap_red_circle.range == [0, 255]  # no threshold: the probability scale
    fz.detect(dataset, ["red circle", "a star"], method="occlusion", context_scales=(0.5,), **kwargs)
    second = dataset.values("clip_heatmap_red_circle.map_path")
    assert set(first).isdisjoint(second) and all(Path(p).is_file() for p in second)
    assert not any(Path(p).exists() for p in first)  # old maps cleaned up, no stale cache
    assert not dataset.has_sample_field("clip_heatmap_blue_square")  # prompt dropped: no map left, no field
    assert {d.method for dets in dataset.values("clip") for d in dets.detections} == {"occlusion"}


def test_a_rerun_with_fewer_prompts_drops_a_heatmap_field_once_no_sample_holds_it(dataset, shapes_model):
    """The App's sidebar lists only heatmap fields that hold maps: a field the reruns emptied goes."""
    kwargs = dict(model=shapes_model, label_field="clip", progress=False, **FAST)
    fz.detect(dataset, PROMPTS, **kwargs)
    first, rest = dataset.limit(2), dataset.skip(2)
    fz.detect(first, ["red circle"], **kwargs)
    assert dataset.has_sample_field("clip_heatmap_blue_square")  # the other two samples still hold theirs
    assert [h is None for h in dataset.values("clip_heatmap_blue_square")] == [True, True, False, False]
    fz.detect(rest, ["red circle"], **kwargs)
    assert not dataset.has_sample_field("clip_heatmap_blue_square")
    assert dataset.count("clip_heatmap_red_circle") == len(dataset)


def test_selected_samples_only_are_touched(dataset, shapes_model):
    selected = dataset.skip(1).limit(2)
    fz.detect(selected, PROMPTS, model=shapes_model, label_field="clip", confidence_thresh=0.0, progress=False, **FAST)
    assert dataset.exists("clip").values("id") == selected.values("id")


def test_field_of_another_type_is_refused_before_any_work(dataset, shapes_model):
    dataset.set_values("clip", [fo.Classification(label="x")] * len(dataset))
    with pytest.raises(LabelingError, match="already holds Classification"):
        fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", progress=False)


def test_apply_model_uses_full_resolution(dataset, shapes_model):
    model = fz.zero_shot_model(PROMPTS, model=shapes_model, confidence_thresh=0.0, **FAST)
    dataset.apply_model(model, label_field="applied")
    reference = fz.localize(dataset.first().filepath, PROMPTS, shapes_model, confidence_thresh=0.0, **FAST)
    boxes = [d.bounding_box for d in dataset.first().applied.detections]
    expected = sum(len(r.detections) for r in reference)
    assert len(boxes) == expected > 0


@pytest.mark.skipif(not data_loader_ready() and not os.environ.get("CI"), reason="FiftyOne's DataLoader path "
                    "(fiftyone.utils.torch) needs torchvision, which does not import beside this torch; "
                    "scripts/setup.sh installs a pair that does (in CI this test must run)")
def test_apply_model_decodes_in_data_loader_workers_and_equals_detect(dataset, shapes_model, caplog):
    model = fz.zero_shot_model(PROMPTS, model=shapes_model, confidence_thresh=0.0, **FAST)
    assert isinstance(model, fom.SupportsGetItem) and isinstance(model, fom.TorchModelMixin)
    fz.detect(dataset, PROMPTS, model=shapes_model, label_field="direct", heatmaps=False, confidence_thresh=0.0,
              progress=False, **FAST)
    for workers in (0, 2):
        dataset.apply_model(model, label_field=f"loader{workers}", batch_size=8, num_workers=workers)
    assert "Ignoring unsupported" not in caplog.text
    expected = _boxes(dataset, "direct")
    assert sum(map(len, expected)) > 0 and _boxes(dataset, "loader0") == _boxes(dataset, "loader2") == expected


def _boxes(samples, field):
    return [[(d.label, d.bounding_box, d.confidence) for d in (x or [])] for x in samples.values(f"{field}.detections")]


def test_plugin_is_discovered_and_operator_runs_on_selected_samples(dataset, plugin_dir):
    assert OPERATOR in [op.uri for op in foo.list_operators()], fop.list_plugins()
    selected = dataset.take(2, seed=1).values("id")
    result = foo.execute_operator(
        OPERATOR,
        ctx=dict(
            view=dataset.view(),
            selected=selected,
            params=dict(prompts=TYPED, model="shapes-world", label_field="op", view_target="SELECTED_SAMPLES",
                        confidence_thresh=0.0, device="cpu", delegate=False),
        ),
    )
    result.raise_exceptions()
    assert sorted(dataset.exists("op").values("id")) == sorted(selected)
    assert dataset.has_field("op_heatmap_red_circle")


def test_operator_reports_bad_params_as_a_readable_error(dataset, plugin_dir):
    params = dict(prompts=" , ", label_field="clip", model="shapes-world", delegate=False)
    with pytest.raises(ExecutionError, match="prompts must be a non-empty list of non-blank strings"):
        foo.execute_operator(OPERATOR, ctx=dict(view=dataset.view(), params=params))
    assert not dataset.has_field("clip")


def test_delegated_run_is_queued_then_completes(dataset, plugin_dir, monkeypatch):
    monkeypatch.setenv("FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS", "true")
    from fiftyone.operators.delegated import DelegatedOperationService

    result = foo.execute_operator(
        OPERATOR,
        ctx=dict(view=dataset.view(), params=dict(prompts="\n".join(PROMPTS), model="shapes-world",
                                                  label_field="queued", view_target="DATASET", device="cpu",
                                                  delegate=True)),
    )
    result.raise_exceptions()
    assert not dataset.has_field("queued")
    service = DelegatedOperationService()
    queued = service.get_queued_operations(operator=OPERATOR, dataset_name=dataset.name)
    assert len(queued) == 1
    service.execute_queued_operations(operator=OPERATOR, dataset_name=dataset.name)
    dataset.reload()
    assert len(dataset.exists("queued")) == len(dataset)
    assert np.isclose(dataset.count("queued_heatmap_red_circle"), len(dataset))


def test_operator_lists_failed_samples_in_its_result(dataset, plugin_dir, monkeypatch):
    monkeypatch.setenv("FIFTYONE_ALLOW_LEGACY_ORCHESTRATORS", "true")
    from fiftyone.operators.delegated import DelegatedOperationService

    broken = dataset.first()
    Path(broken.filepath).write_bytes(b"not an image")
    params = dict(prompts=TYPED, model="shapes-world", label_field="op", view_target="DATASET", device="cpu",
                  delegate=True, heatmaps=False)
    foo.execute_operator(OPERATOR, ctx=dict(view=dataset.view(), params=params)).raise_exceptions()
    service = DelegatedOperationService()
    service.execute_queued_operations(operator=OPERATOR, dataset_name=dataset.name)
    (run,) = service.list_operations(operator=OPERATOR, dataset_name=dataset.name)
    summary = run.result.result
    assert summary["failed"] == 1 and summary["failures"][0].startswith(f"{broken.id}: ImageLoadError")
    assert re.fullmatch(r"labelled 3 of 4 samples into 'op' \([\d,]+ crops encoded, [\d,]+ read from the "
                        r"embedding store\); 1 failed and were left without labels \(see failures\)",
                        summary["message"]), summary["message"]
    dataset.reload()
    assert dataset.count("op") == len(dataset) - 1


def test_heatmaps_hold_probabilities_shown_full_at_the_threshold(tmp_path):
    probs = np.linspace(0, 1, 100 * 100, dtype=np.float32).reshape(100, 100)
    inline = to_heatmap(probs[:8, :8], tmp_path / "small.png", full_at=0.6)
    assert inline.range == [0.0, 0.6] and np.array_equal(inline.map, probs[:8, :8])
    png = to_heatmap(probs, tmp_path / "large.png", full_at=0.6)
    assert png.range == [0, 153] and np.asarray(Image.open(png.map_path))[-1, -1] == 255


def test_candidates_field_and_a_cut_crowd_are_stored_and_said(dataset, shapes_model, capsys):
    fz.detect(dataset, PROMPTS, method="proposals", model=shapes_model, label_field="clip", heatmaps=False,
              candidates_field="clip_candidates", max_detections=1, confidence_thresh=0.0, progress=False)
    for sample in dataset:
        candidates = sample["clip_candidates"].detections
        assert {d.label for d in candidates} == {"candidate"}
        assert len(candidates) == len(fz.propose(sample.filepath)) > 1
        labels = [d.label for d in sample["clip"].detections]
        assert labels and all(labels.count(p) <= 1 for p in PROMPTS)  # at most one box per prompt: the cap
    assert DetectRun.load(dataset, "clip").candidates_field == "clip_candidates"
    out = capsys.readouterr().out
    assert f"max_detections=1 cut the boxes of 'red circle' on {len(dataset)} samples" in out
    with pytest.raises(fz.OptionsError, match="must differ"):
        fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", candidates_field="clip")
