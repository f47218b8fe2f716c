"""The review of auto-labels: decisions as label tags, the queue, promote, per-prompt thresholds
learnt from the decisions (a scripted review against ground truth), and the report."""

import pytest

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.labeling.curation.decisions import (
    ACCEPTED,
    REJECTED,
    RELABELED,
    reviewed_labels,
    run_thresholds,
)
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset
from fiftyone_clip_zeroshot.shapes.review import kept_right, review_from_ground_truth, verdicts_from_ground_truth

PROMPTS = ["red circle", "blue square", "yellow star", "green triangle", "purple cross", "orange circle"]
SCENES = 40  # the first half reviewed, the second held out


@pytest.fixture(scope="module")
def scenes(tmp_root, shapes_model):
    """Shapes-world scenes of the six prompts, auto-labelled at a low threshold (0.3), as a review starts."""
    dataset = load_shapes_dataset("review", SCENES, tmp_root / "images" / "review", seed=21, classes=tuple(PROMPTS))
    fz.detect(dataset, PROMPTS, model=shapes_model, method="proposals", label_field="auto", confidence_thresh=0.3,
              heatmaps=False, progress=False)
    yield dataset
    dataset.delete()


def test_thresholds_learnt_from_a_review_hold_on_held_out_scenes(scenes):
    verdicts = verdicts_from_ground_truth(scenes, "auto")
    ids = scenes.values("id")
    reviewed, held_out = scenes.select(ids[: SCENES // 2]), scenes.select(ids[SCENES // 2:])
    review_from_ground_truth(reviewed, "auto", verdicts)
    calibration = fz.calibrate(reviewed, "auto", precision=0.9)
    print(calibration)
    print(fz.review_report(reviewed, "auto"))

    right, total = kept_right(held_out, "auto", verdicts, calibration)
    shared = {prompt: calibration.shared for prompt in PROMPTS}
    shared_right, shared_total = kept_right(held_out, "auto", verdicts, shared)
    print(f"held out: per-prompt thresholds keep {right} right of {total} (precision {right / total:.3f}); the "
          f"shared threshold {calibration.shared:.3f} keeps {shared_right} of {shared_total} "
          f"(precision {shared_right / shared_total:.3f})")
    assert right / total >= 0.85 and right >= 0.9 * shared_right
    decisions = sum(item.decisions for item in calibration.details.values())
    assert decisions == sum(label.decision is not None for label in reviewed_labels(scenes, "auto")) > 0
    assert all(0.3 <= value <= 1 for value in calibration.values())
    assert DetectRun.load(scenes, "auto").calibrated == dict(calibration)  # stored on the run record
    strict = fz.calibrate(reviewed, "auto", precision=0.9, each_prompt=True, save=False)
    assert all(item.precision is None or item.precision >= 0.9 - 1e-9 or item.source.startswith("pulled")
               for item in strict.details.values())

    report = fz.review_report(scenes, "auto")
    rows = {row.prompt: row for row in report.prompts}
    assert sum(row.reviewed for row in rows.values()) == decisions and report.labels == len(verdicts)
    assert "reviewed" in report.progress() and str(report).startswith("review of 'auto'")
    assert all(row.calibrated == calibration[row.prompt] for row in rows.values())

    again = fz.detect(held_out, PROMPTS, model="shapes-world", method="proposals", label_field="auto_calibrated",
                      confidence_thresh=dict(calibration), heatmaps=False, progress=False)
    assert again == ["auto_calibrated"]
    for detection in held_out.values("auto_calibrated.detections", unwind=True):
        assert detection.confidence >= calibration[detection.label] - 1e-6
    assert DetectRun.load(scenes, "auto_calibrated").thresholds == dict(calibration)
    with pytest.raises(fz.OptionsError, match="not detected"):
        fz.detect(held_out, PROMPTS[:2], model="shapes-world", label_field="refused", confidence_thresh={"cat": 0.5})
    fz.clear_decisions(scenes, "auto", scenes.values("auto.detections.id", unwind=True))


def test_decisions_are_label_tags_read_the_same_from_anywhere(scenes):
    labels = reviewed_labels(scenes, "auto")[:4]
    first, second, third, fourth = (label.label_id for label in labels)
    box = labels_box(scenes, third)
    fz.accept(scenes, "auto", [first])
    fz.reject(scenes, "auto", [second])
    other = next(p for p in PROMPTS if p != labels[2].label)
    fz.relabel(scenes, "auto", [third], other)
    scenes.select_labels(ids=[fourth]).tag_labels(ACCEPTED)  # as the App's tagging or a script does it
    now = {label.label_id: label for label in reviewed_labels(scenes, "auto")}
    assert [now[i].decision for i in (first, second, third, fourth)] == [ACCEPTED, REJECTED, RELABELED, ACCEPTED]
    assert now[third].label == other and now[third].prompt == labels[2].label and now[third].correct is False
    assert scenes.count_label_tags()[ACCEPTED] == 2
    assert labels_box(scenes, third) == box  # a decision never moves a box

    queue = fz.review_queue(scenes, "auto")
    assert {first, second, third, fourth}.isdisjoint(label.label_id for label in queue)
    assert len(queue) == len(reviewed_labels(scenes, "auto")) - 4

    fz.relabel(scenes, "auto", [third], labels[2].label)  # back to the run's own label: an accept
    assert {label.label_id: label for label in reviewed_labels(scenes, "auto")}[third].decision == ACCEPTED
    fz.clear_decisions(scenes, "auto", [first, second, third, fourth])
    assert not any(label.decision for label in reviewed_labels(scenes, "auto"))
    with pytest.raises(fz.LabelingError, match="no label"):
        fz.accept(scenes, "auto", ["000000000000000000000000"])


def labels_box(dataset, label_id: str) -> list[float]:
    return next(d.bounding_box for d in dataset.values("auto.detections", unwind=True) if d.id == label_id)


def test_queue_puts_clip_mismatches_first_then_labels_near_the_threshold(scenes):
    labels = reviewed_labels(scenes, "auto")
    doubtful = labels[-1].label_id
    scenes.select_labels(ids=[doubtful]).tag_labels("clip:mismatch")
    queue = fz.review_queue(scenes, "auto")
    assert queue[0].label_id == doubtful
    thresholds = {p: 0.3 for p in PROMPTS}  # the run's; nothing calibrated now
    DetectRun.load(scenes, "auto").update(scenes, calibrated={})
    queue = fz.review_queue(scenes, "auto")
    near = [abs(label.confidence - thresholds[label.prompt]) <= 0.1 for label in queue[1:]]
    assert near == sorted(near, reverse=True)
    scenes.untag_labels("clip:mismatch", label_fields=["auto"])


def test_promote_writes_exactly_the_accepted_and_relabeled_labels_and_reruns_change_nothing(scenes):
    labels = reviewed_labels(scenes, "auto")
    accepted, rejected, relabeled = labels[0], labels[1], labels[2]
    fz.accept(scenes, "auto", [accepted.label_id])
    fz.reject(scenes, "auto", [rejected.label_id])
    fz.relabel(scenes, "auto", [relabeled.label_id], next(p for p in PROMPTS if p != relabeled.label))
    scenes.set_label_values("auto.detections.bounding_box", {accepted.label_id: [0.1, 0.1, 0.2, 0.2]})  # an edit

    assert fz.promote(scenes, "auto", dest_field="curated") == 2
    promoted = scenes.values("curated.detections", unwind=True)
    assert sorted(d.source_id for d in promoted) == sorted([accepted.label_id, relabeled.label_id])
    by_source = {d.source_id: d for d in promoted}
    assert by_source[accepted.label_id].bounding_box == [0.1, 0.1, 0.2, 0.2]
    assert by_source[relabeled.label_id].label != relabeled.prompt
    assert not any(tag in d.tags for d in promoted for tag in (ACCEPTED, RELABELED))
    before = scenes.values("curated")
    assert fz.promote(scenes, "auto", dest_field="curated") == 2
    assert scenes.values("curated") == before  # idempotent: same labels, same ids

    fz.reject(scenes, "auto", [relabeled.label_id])  # more review, then promote again
    assert fz.promote(scenes, "auto", dest_field="curated") == 1
    assert [d.source_id for d in scenes.values("curated.detections", unwind=True)] == [accepted.label_id]
    with pytest.raises(fz.LabelingError, match="did not write it"):
        fz.promote(scenes, "auto", dest_field="ground_truth")  # never replaces labels made elsewhere
    fz.clear_decisions(scenes, "auto", [label.label_id for label in labels[:3]])
    scenes.delete_sample_field("curated")


def test_operators_promote_and_detect_with_the_calibrated_thresholds(scenes, plugin_dir):
    import fiftyone.operators as foo

    verdicts = verdicts_from_ground_truth(scenes, "auto")
    first = scenes.limit(10)
    review_from_ground_truth(first, "auto", verdicts)
    calibration = fz.calibrate(first, "auto")
    result = foo.execute_operator("@clip-zeroshot/fiftyone-clip-zeroshot/promote_labels", ctx=dict(
        view=scenes.view(), params=dict(label_field="auto", dest_field="auto_approved")))
    result.raise_exceptions()
    approved = scenes.values("auto_approved.detections", unwind=True)
    assert len(approved) == sum(v != REJECTED for i, v in verdicts.items() if i in set(first.values(
        "auto.detections.id", unwind=True))) and "promoted" in result.result["message"]

    ids = scenes.skip(30).limit(2).values("id")
    run = foo.execute_operator("@clip-zeroshot/fiftyone-clip-zeroshot/detect", ctx=dict(
        view=scenes.view(), selected=ids, params=dict(prompts=", ".join(PROMPTS[:3]), method="proposals",
                                                      model="shapes-world", label_field="auto_next", heatmaps=False,
                                                      calibrated_from="auto", view_target="SELECTED_SAMPLES",
                                                      delegate=False)))
    run.raise_exceptions()
    assert DetectRun.load(scenes, "auto_next").thresholds == {p: calibration[p] for p in PROMPTS[:3]}
    fz.clear_decisions(scenes, "auto", scenes.values("auto.detections.id", unwind=True))
    scenes.delete_sample_field("auto_approved")


def test_a_run_at_threshold_zero_is_reviewed_at_zero():
    run = DetectRun(label_field="auto", prompts=["a"], heatmap_fields=[], model="m", device="cpu",
                    options={"confidence_thresh": 0.0}, run_id="r")
    assert run_thresholds(run, ["a"]) == {"a": 0.0}
    assert run_thresholds(None, ["a"]) == {"a": 0.5}  # a field no run wrote
