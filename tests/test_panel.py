"""The App panel: its library functions directly, then its handlers through FiftyOne's executor."""

import os

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from fiftyone.operators.executor import ExecutionError

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.app.panel import raised_message, samples_text
from fiftyone_clip_zeroshot.app.runner import runs_inline
from fiftyone_clip_zeroshot.core.embedding_store import open_store
from fiftyone_clip_zeroshot.labeling.curation.curate import REVIEW_TAG
from fiftyone_clip_zeroshot.labeling.curation.decisions import reviewed_labels
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun, plugin_fields
from fiftyone_clip_zeroshot.labeling.runs.results import (
    confidence_view,
    detection_fields,
    fields_to_show,
    histogram_traces,
    overwrite_note,
    prompt_stats,
)
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset

PLUGIN = "@clip-zeroshot/fiftyone-clip-zeroshot"
PANEL, DETECT, OPEN_PANEL = f"{PLUGIN}/clip_zeroshot_panel", f"{PLUGIN}/detect", f"{PLUGIN}/open_panel"
PROMPTS = ["yellow circle", "purple circle", "red star"]
FAST = dict(window_scales=(0.25, 0.5), window_stride=0.5)


@pytest.fixture(scope="module")
def labelled(tmp_root, shapes_model):
    dataset = load_shapes_dataset("panel", 5, tmp_root / "images" / "panel", seed=3, width=320, height=240)
    fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", confidence_thresh=0.2, progress=False, **FAST)
    yield dataset
    dataset.delete()


def test_prompt_stats_count_detections_samples_and_confidences(labelled):
    stats = prompt_stats(labelled, "clip")
    assert [s.prompt for s in stats] == PROMPTS  # the run's order, also for prompts that found nothing
    detections = labelled.values("clip.detections", unwind=True)
    for item in stats:
        mine = [d for d in detections if d.label == item.prompt]
        assert item.detections == len(mine) and sorted(item.confidences) == sorted(d.confidence for d in mine)
        assert item.samples == len(labelled.filter_labels("clip", fo.ViewField("label") == item.prompt))
        assert item.heatmap_field == f"clip_heatmap_{item.prompt.replace(' ', '_')}"
    traces = histogram_traces(stats, bins=10)
    assert [sum(t["y"]) for t in traces] == [s.detections for s in stats]


def test_run_parameters_fields_and_views(labelled):
    run = DetectRun.load(labelled, "clip")
    assert run.prompts == PROMPTS and run.model == "shapes-world" and run.method == "sliding_window"
    assert run.heatmap_of["purple circle"] == "clip_heatmap_purple_circle"
    assert DetectRun.load(labelled, "ground_truth") is None
    assert detection_fields(labelled) == ["clip", "ground_truth"]  # the plugin's fields first
    assert plugin_fields(labelled) == ["clip"]  # what the panel opens on; never ground_truth
    assert fields_to_show(labelled, "clip", "purple circle") == ["clip", "clip_heatmap_purple_circle"]
    above = confidence_view(labelled, "clip", 0.5).values("clip.detections.confidence", unwind=True)
    below = confidence_view(labelled, "clip", 0.5, above=False).values("clip.detections.confidence", unwind=True)
    assert all(c >= 0.5 for c in above) and all(c < 0.5 for c in below)
    assert len(above) + len(below) == labelled.count("clip.detections")


def _call(dataset, method, state, selected=None, **params):
    """Run one panel handler the way the App does (an operator call with panel_id and panel_state)."""
    result = foo.execute_operator(PANEL, ctx=dict(view=dataset.view(), selected=selected or [], params=dict(
        params, panel_id="panel-1", __method__=method, panel_state=dict(state))))
    result.raise_exceptions()
    return result


def _requested_run(result) -> dict:
    """The detect run a panel handler asked the App to start (``ctx.prompt`` without a form)."""
    requests = result.to_json()["executor"]["requests"]
    prompts = [r["params"] for r in requests if r["operator_uri"] == "prompt_user_for_operation"]
    assert len(prompts) == 1 and prompts[0]["operator_uri"] == DETECT and prompts[0]["skip_prompt"]
    return prompts[0]


def test_panel_is_registered_and_its_handlers_run_tag_and_filter(labelled, plugin_dir, tmp_root):
    uris = [op.uri for op in foo.list_operators()]
    assert PANEL in uris and OPEN_PANEL in uris
    assert OPEN_PANEL not in [op.uri for op in foo.list_operators(type="panel")]  # listed as an operator
    dataset = load_shapes_dataset("panel-run", 4, tmp_root / "images" / "panel-run", seed=3, width=320, height=240)
    selected = dataset.take(2, seed=0).values("id")
    state = dict(prompts="yellow circle,\n purple circle, yellow circle", method="sliding_window", model="shapes-world",
                 target="SELECTED_SAMPLES", label_field="panel_clip", inspect_field="panel_clip", threshold=0.2,
                 slider=0.7, direction="above")
    _call(dataset, "on_load", dict(state, inspect_field=None), selected)
    run = _requested_run(_call(dataset, "on_run", state, selected))
    assert run["params"]["prompts"] == "yellow circle, purple circle"  # checked, in the order typed
    assert run["params"]["delegate"] is False and run["params"]["view_target"] == "SELECTED_SAMPLES"
    assert not dataset.has_field("panel_clip")  # the panel only asks; the operator does the work
    executed = foo.execute_operator(DETECT, ctx=dict(view=dataset.view(), selected=selected, params=run["params"]))
    executed.raise_exceptions()
    assert sorted(dataset.exists("panel_clip").values("id")) == sorted(selected)
    assert DetectRun.load(dataset, "panel_clip").prompts == ["yellow circle", "purple circle"]
    done = _call(dataset, run["on_success"].split("#")[1], state, result=None, original_params=run["params"])
    assert "panel_clip" in str(done.to_json())  # the summary shows the new field
    confidences = dataset.values("panel_clip.detections.confidence", unwind=True)
    _call(dataset, "on_tag", state)
    tagged = [d for d in dataset.values("panel_clip.detections", unwind=True) if REVIEW_TAG in d.tags]
    assert len(tagged) == sum(c < 0.7 for c in confidences)
    for method in ("on_slider", "on_change_selected", "on_clear", "on_edit"):
        _call(dataset, method, state)
    _call(dataset, "on_show_heatmap", state, prompt="yellow circle")
    _call(dataset, run["on_error"].split("#")[1], state, error="Traceback ...\nValueError: no such model")
    refused = _call(dataset, "on_run", dict(state, prompts=" , \n"))  # refused in the panel's status line
    assert not refused.to_json()["executor"]["requests"] or all(
        r["operator_uri"] != "prompt_user_for_operation" for r in refused.to_json()["executor"]["requests"])
    assert sorted(dataset.exists("panel_clip").values("id")) == sorted(selected)
    dataset.delete()


def _state_after(result) -> dict:
    """The panel state a handler left, as the App would hold it after applying the handler's patches."""
    state = {}
    for request in result.to_json()["executor"]["requests"]:
        if request["operator_uri"] in ("set_panel_state", "patch_panel_state"):
            state.update(request["params"]["state"])
    return state


def test_panel_defaults_fit_a_newcomer_offline(labelled, plugin_dir, shapes_model):
    """Offline, the model defaults to a packaged one; the field to write is one no run wrote; and
    Inspect opens on the plugin's field with the most samples, not on the newest run."""
    fz.detect(labelled.take(1, seed=0), ["red star"], model=shapes_model, label_field="clip_detections",
              progress=False, **FAST)  # newer, but 1 sample against the 5 of 'clip'
    state = _state_after(_call(labelled, "on_load", {}))
    assert state["model"] == "shapes-world"  # HF_HUB_OFFLINE: openai/clip-vit-base-patch32 cannot load
    assert state["label_field"] == "clip_detections_2"
    assert state["inspect_field"] == "clip"
    assert "holds run" in overwrite_note(labelled, "clip_detections") and overwrite_note(labelled, "new") == ""
    assert "another kind of field" in overwrite_note(labelled, "filepath")
    labelled.delete_sample_field("clip_detections")
    labelled.delete_run("clip_zeroshot_clip_detections")


def test_large_targets_are_delegated(plugin_dir, tmp_root):
    dataset = load_shapes_dataset("panel-big", 30, tmp_root / "images" / "panel-big", seed=4, width=64, height=48)
    state = dict(prompts="red star", model="shapes-world", target="DATASET", label_field="big")
    run = _requested_run(_call(dataset, "on_run", state))
    assert run["params"]["delegate"] is True and run["params"]["view_target"] == "DATASET"
    assert run["params"]["refine_boxes"] is True  # on unless unticked
    run = _requested_run(_call(dataset, "on_run", dict(state, refine_boxes=False)))
    assert run["params"]["refine_boxes"] is False
    dataset.delete()


def test_a_thousand_samples_the_store_has_seen_run_inline(plugin_dir, tmp_root):
    """Past ``DELEGATE_ABOVE`` samples, a target whose every image is embedded runs inline while its
    warm run is estimated short (``runs_inline``): 1,000 seen samples (one image, linked 1,000 times)."""
    seen = load_shapes_dataset("panel-seen", 1, tmp_root / "images" / "panel-seen", seed=5, width=64, height=48)
    first = seen.first().filepath
    fz.detect(seen, ["red star"], model="shapes-world", method="proposals", label_field="cold", progress=False)
    folder = tmp_root / "images" / "panel-seen" / "links"
    folder.mkdir()
    links = [folder / f"{index:04d}.jpg" for index in range(999)]
    for link in links:
        os.link(first, link)
    seen.add_samples([fo.Sample(filepath=str(link)) for link in links], progress=False)
    store = open_store(True)
    for link in links:
        store.note_file(str(link), store.file_digest(first), (48, 64))
    state = dict(prompts="red star", model="shapes-world", method="proposals", target="DATASET", label_field="warm")
    assert _requested_run(_call(seen, "on_run", state))["params"]["delegate"] is False
    assert not runs_inline(seen, "shapes-world", "occlusion")  # its crops follow the prompts
    assert not runs_inline(seen, "shapes-alt-text", "proposals")  # not embedded under this model
    seen.delete()


def test_review_section_accepts_rejects_relabels_undoes_calibrates_and_promotes(labelled, plugin_dir):
    """The Review section's buttons, through the executor: each decision lands as a label tag,
    the queue moves on, undo takes the last one back, and calibrate/promote read the decisions."""
    state = dict(inspect_field="clip")

    def press(method: str) -> dict:
        state.update(_state_after(_call(labelled, method, state)))
        return state

    queue = [label.label_id for label in fz.review_queue(labelled, "clip")]
    assert press("on_review_next")["review_label"] == queue[0]
    assert len(queue) >= 4 and state["review_progress"].startswith("0 of")
    decided = []
    for method in ("on_accept", "on_reject", "on_relabel"):
        decided.append(state["review_label"])
        state["relabel_as"] = "red star"  # what the dropdown holds (showing a new label clears it)
        press(method)
        assert state["review_label"] not in decided
    labels = {label.label_id: label for label in reviewed_labels(labelled, "clip")}
    assert [labels[i].decision for i in decided] == ["accepted", "rejected", "relabeled"]
    assert labels[decided[2]].label == "red star" and "3 of" in state["review_progress"]
    assert state["review_left"] == len(queue) - 3  # "Start reviewing" shows only while labels are left
    press("on_undo")  # the relabel is taken back and its label is current again
    labels = {label.label_id: label for label in reviewed_labels(labelled, "clip")}
    assert labels[decided[2]].decision is None and labels[decided[2]].label == labels[decided[2]].prompt
    assert state["review_label"] == decided[2] and len(state["review_history"]) == 2
    press("on_calibrate")
    assert "calibrated to precision 0.90" in state["review_status"] and state["calibrated"]
    assert DetectRun.load(labelled, "clip").calibrated
    press("on_calibrated_view")
    state["promote_field"] = "clip_curated"
    press("on_promote")
    assert "Promoted 1 " in state["review_status"]
    assert [d.source_id for d in labelled.values("clip_curated.detections", unwind=True)] == [decided[0]]
    fz.clear_decisions(labelled, "clip", decided[:2])
    labelled.delete_sample_field("clip_curated")
    DetectRun.load(labelled, "clip").update(labelled, calibrated={}, calibration={})


def _plot_traces(result) -> list[str]:
    """The trace names of the histogram the panel rendered (the plot's data is in the rendered view,
    which the App replaces whole on each render)."""
    outputs = [r["params"]["output"] for r in result.to_json()["executor"]["requests"]
               if r["operator_uri"] == "show_panel_output"]
    plot = outputs[-1]["type"]["properties"]["histogram"]["view"]
    return [trace["name"] for trace in plot["data"]]


def test_the_histogram_shows_only_the_inspected_fields_prompts(labelled, plugin_dir, shapes_model):
    """Inspecting a field of three prompts and then one of a single prompt leaves one trace. The App
    merged the plot's panel data into the previous one by index, so the first field's other traces
    stayed (seen in chromium); the traces now live in the rendered view, which it replaces whole."""
    fz.detect(labelled.limit(2), ["red star"], model=shapes_model, label_field="clip_one", progress=False, **FAST)
    first = _call(labelled, "on_change_field", {}, value="clip")
    assert _plot_traces(first) == PROMPTS
    second = _call(labelled, "on_change_field", dict(inspect_field="clip", traces=_state_after(first)["traces"]),
                   value="clip_one")
    assert _plot_traces(second) == ["red star"]
    labelled.delete_sample_field("clip_one")
    labelled.delete_run("clip_zeroshot_clip_one")


def test_a_panels_run_reports_in_the_panel_and_opens_no_dialog(labelled, plugin_dir):
    """The App's progress dialog (``set_progress``) stays open until its Done is pressed: a run the
    panel started shows its progress and summary in the panel's status line only."""
    params = dict(prompts="red star", model="shapes-world", method="dense", label_field="clip_dialog",
                  view_target="CURRENT_VIEW", delegate=False, refine_boxes=False)
    requests = {}
    for panel_id in ("panel-1", None):
        result = foo.execute_operator(DETECT, ctx=dict(view=labelled.limit(2), params=dict(params, panel_id=panel_id)))
        requests[panel_id] = [r["operator_uri"] for r in result.to_json()["executor"]["requests"]]
    assert "set_progress" not in requests["panel-1"] and "show_output" not in requests["panel-1"]
    assert requests["panel-1"].count("patch_panel_state") == 3  # two steps and the summary
    assert "set_progress" in requests[None] and "show_output" in requests[None]  # the operator browser's run
    assert labelled.get_run_info("clip_zeroshot_clip_dialog").config.options["refine_boxes"] is False
    labelled.delete_sample_field("clip_dialog")
    labelled.delete_run("clip_zeroshot_clip_dialog")


def test_an_unknown_model_is_named_in_the_panels_status(labelled, plugin_dir):
    """The operator's error (a traceback whose message spans lines) reaches the panel's status line
    whole: the model's name and what to do, not only transformers' last line."""
    with pytest.raises(ExecutionError) as failed:
        foo.execute_operator(DETECT, ctx=dict(view=labelled.view(), params=dict(
            prompts="red star", model="no-such-model", label_field="never", view_target="DATASET", delegate=False)))
    error = str(failed.value)  # the traceback the App hands the panel's on_error
    state = _state_after(_call(labelled, "on_run_failed", {}, error=error))
    assert state["status"].startswith("Not run: Could not load CLIP weights 'no-such-model'")
    assert "packaged model" in state["status"] and "\n" not in state["status"]
    assert not labelled.has_sample_field("never")
    assert raised_message("Traceback ...\n  File x\nValueError: first\nsecond") == "first second"
    assert raised_message(None) == "unknown error" and raised_message("just a line") == "just a line"


def test_find_objects_shows_the_patches_fz_search_finds(plugin_dir, zoo_source, tmp_root):
    """Without an index the section says how to build one; with one, Find shows ``fz.search``'s view,
    re-ranked against the Run section's other prompts."""
    dataset = load_shapes_dataset("panel-find", 4, tmp_root / "images" / "panel-find", seed=3, width=320, height=240)
    state = dict(prompts="yellow circle, purple circle, red star", find_prompt="yellow circle", find_k=3)
    assert "no object index" in _state_after(_call(dataset, "on_find", state))["find_status"]
    fz.propose(dataset, progress=False)
    fz.index_objects(dataset, brain_key="objects", model="shapes-world", progress=False)
    result = _call(dataset, "on_find", state)
    shown = [r["params"]["view"] for r in result.to_json()["executor"]["requests"] if r["operator_uri"] == "set_view"]
    expected = fz.search(dataset, "yellow circle", k=3, brain_key="objects", prompts=["purple circle", "red star"])
    assert len(shown) == 1 and fo.DatasetView._build(dataset, shown[0]).values("id") == expected.values("id")
    assert _state_after(result)["find_status"] == ("3 patches for `yellow circle`, best first (index `objects`, "
                                                   "re-ranked against the Run section's 2 prompts).")
    missing = _call(dataset, "on_find", dict(state, find_index="gone", find_prompt=""))  # a deleted index: the first
    assert _state_after(missing)["find_status"].startswith("Type what to find first")
    dataset.delete()


def test_sample_counts_read_as_english():
    assert [samples_text(n) for n in (0, 1, 2)] == ["0 samples", "1 sample", "2 samples"]
