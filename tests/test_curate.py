"""Curation on the shapes world: verify/relabel boxes, classify images, evaluate, tag, review."""

import fiftyone as fo
import numpy as np
import pytest

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.labeling.curation.curate import MISMATCH_TAG, REVIEW_TAG
from fiftyone_clip_zeroshot.labeling.runs.jobs import LabelingError
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset
from fiftyone_clip_zeroshot.shapes.world import CLASSES, render_scene

SWAP_FRACTION = 0.3


@pytest.fixture(scope="module")
def scenes(tmp_root):
    dataset = load_shapes_dataset("curate-scenes", 30, tmp_root / "images" / "curate", seed=7)
    yield dataset
    dataset.delete()


def _swap_labels(dataset, field, seed=0):
    """Copy ground truth into ``field`` with SWAP_FRACTION of labels replaced by another class."""
    rng = np.random.default_rng(seed)
    swapped = set()
    noisy = []
    for detections in dataset.values("ground_truth"):
        copy = detections.copy()
        for detection in copy.detections:
            if rng.random() < SWAP_FRACTION:
                detection.label = rng.choice([c for c in CLASSES if c != detection.label])
                swapped.add(detection.id)
        noisy.append(copy)
    dataset.set_values(field, noisy)
    return swapped


def test_verify_flags_swapped_labels_and_few_correct_ones(scenes, shapes_model):
    swapped = _swap_labels(scenes, "noisy")
    fz.verify(scenes, "noisy", classes=CLASSES, model=shapes_model, relabel_field="relabelled", progress=False)
    tagged = scenes.filter_labels("noisy", fo.ViewField("tags").contains(MISMATCH_TAG))
    flagged = set(tagged.values("noisy.detections.id", unwind=True))
    disagreeing = {d.id for dets in scenes.values("noisy") for d in dets.detections if d.clip_label != d.label}
    assert flagged == disagreeing  # the tag lands on exactly the labels CLIP disagrees with
    everything = set(scenes.values("noisy.detections.id", unwind=True))
    assert len(swapped) >= 0.2 * len(everything)
    caught = len(flagged & swapped) / len(swapped)
    false_flags = len(flagged - swapped) / len(everything - swapped)
    print(f"swaps flagged {caught:.3f}, correct labels flagged {false_flags:.3f}")
    assert caught >= 0.9 and false_flags <= 0.1
    right = total = 0
    for truth, relabelled in zip(scenes.values("ground_truth"), scenes.values("relabelled")):
        by_box = {tuple(d.bounding_box): d.label for d in truth.detections}
        right += sum(by_box[tuple(d.bounding_box)] == d.label for d in relabelled.detections)
        total += len(truth.detections)
    assert right >= 0.9 * total  # CLIP's relabelling restores the true labels


def test_rerun_removes_the_tag_once_labels_agree(scenes, shapes_model):
    view = scenes.match(fo.ViewField("ground_truth.detections").length() > 0).limit(3)
    view.set_values("fixed", [d.copy() for d in view.values("ground_truth")])
    sample = view.first()
    wrong = sample.fixed.detections[0]
    wrong.label = next(c for c in CLASSES if c != wrong.label)
    sample.save()
    fz.verify(view, "fixed", classes=CLASSES, model=shapes_model, progress=False)
    sample.reload()
    corrected = sample.fixed.detections[0]
    assert MISMATCH_TAG in corrected.tags
    corrected.label = corrected.clip_label
    sample.save()
    fz.verify(view, "fixed", classes=CLASSES, model=shapes_model, progress=False)
    sample.reload()
    assert MISMATCH_TAG not in sample.fixed.detections[0].tags


def test_zero_shot_classification_of_single_shape_images(tmp_root, shapes_model):
    folder = tmp_root / "images" / "single"
    folder.mkdir(parents=True, exist_ok=True)
    samples = []
    for index in range(40):
        scene = render_scene(9, index, 224, 224, max_objects=1, min_objects=1, sizes=(64, 200))
        path = folder / f"single-{index}.jpg"
        scene.image.save(path, quality=95)
        samples.append(fo.Sample(filepath=str(path), truth=fo.Classification(label=scene.labels[0])))
    dataset = fo.Dataset("single-shapes", overwrite=True)
    dataset.add_samples(samples, progress=False)
    fz.classify(dataset, CLASSES, label_field="clip", model=shapes_model, store_logits=True, progress=False)
    predicted, truth = dataset.values("clip.label"), dataset.values("truth.label")
    accuracy = np.mean([p == t for p, t in zip(predicted, truth)])
    print(f"classification accuracy {accuracy:.3f}")
    assert accuracy >= 0.85
    first = dataset.first().clip
    assert 0 < first.confidence <= 1 and len(first.logits) == len(CLASSES)


def test_evaluate_tag_and_review(tmp_root, shapes_model):
    dataset = load_shapes_dataset("review-loop", 6, tmp_root / "images" / "review", seed=7)
    prompts = list(CLASSES[:10])
    fz.detect(dataset, prompts, model=shapes_model, label_field="pred", heatmaps=False, progress=False)
    everything = fz.evaluate(dataset, "pred", eval_key="eval", classes="all")  # then replaced under the same key
    report = fz.evaluate(dataset, "pred", eval_key="eval")  # by default: only the prompted classes count
    print(report)
    dataset.reload()
    predictions = dataset.values("pred.detections", unwind=True)
    truths = dataset.values("ground_truth.detections", unwind=True)
    prompted = [d for d in truths if d.label in prompts]
    assert report.classes == prompts and "prompted" in str(report) and len(prompted) < len(truths)
    assert everything.classes is None and everything.tp + everything.fn == len(truths)
    assert report.tp + report.fp == len(predictions)
    assert report.tp + report.fn == len(prompted) and report.tp == sum(d.eval == "tp" for d in predictions)
    assert all(getattr(d, "eval", None) is None for d in truths if d.label not in prompts)  # no stale outcome
    assert 0 <= report.map <= 1 and set(report.per_class) == set(prompts)
    assert sum(row["tp"] for row in report.per_class.values()) == report.tp
    assert "mAP@[.5:.95]" in str(report)

    tagged = fz.tag_for_review(dataset, "pred", confidence_below=0.7, eval_key="eval", gt_field="ground_truth")
    expected_pred = {d.id for d in predictions if d.confidence < 0.7 or d.eval == "fp"}
    expected_gt = {d.id for d in prompted if d.eval == "fn"}
    dataset.reload()
    got_pred = {d.id for d in dataset.values("pred.detections", unwind=True) if REVIEW_TAG in d.tags}
    got_gt = {d.id for d in dataset.values("ground_truth.detections", unwind=True) if REVIEW_TAG in d.tags}
    assert got_pred == expected_pred and got_gt == expected_gt and tagged == len(expected_pred) + len(expected_gt)

    patches = fz.review_view(dataset, "pred", eval_key="eval")
    assert len(patches) == report.fp + report.fn - patches.count_values("type").get("tp", 0)
    assert set(patches.distinct("type")) <= {"fp", "fn"}
    assert len(fz.review_view(dataset, "pred")) == len(expected_pred)
    given = fz.evaluate(dataset, "pred", eval_key="eval_two", classes=prompts[:2])
    assert given.classes == prompts[:2] and set(given.per_class) == set(prompts[:2])
    with pytest.raises(fz.OptionsError, match="'all'"):
        fz.evaluate(dataset, "pred", classes="red circle")
    dataset.delete()


def test_verify_refuses_a_field_without_detections(scenes, shapes_model):
    with pytest.raises(LabelingError, match="must be an existing fo.Detections field"):
        fz.verify(scenes, "no_such_field", model=shapes_model, progress=False)


def test_curation_operators_run_from_the_plugin(scenes, plugin_dir):
    import fiftyone.operators as foo

    auto = [d.copy() for d in scenes.values("ground_truth")]
    for detection in (d for dets in auto for d in dets.detections):
        detection.confidence = 0.9
    scenes.set_values("auto", auto)
    run = dict(model="shapes-world", device="cpu", delegate=False, view_target="DATASET")
    foo.execute_operator("@clip-zeroshot/fiftyone-clip-zeroshot/verify_labels",
                         ctx=dict(view=scenes.view(), params=dict(label_field="auto", **run))).raise_exceptions()
    assert all(d.clip_label for d in scenes.values("auto.detections", unwind=True))
    mismatched = scenes.count_label_tags("auto").get(MISMATCH_TAG, 0)
    foo.execute_operator("@clip-zeroshot/fiftyone-clip-zeroshot/classify_images",
                         ctx=dict(view=scenes.limit(3), params=dict(run, classes=", ".join(CLASSES), label_field="kind",
                                                                  view_target="CURRENT_VIEW"))
                         ).raise_exceptions()
    assert scenes.count("kind") == 3
    result = foo.execute_operator("@clip-zeroshot/fiftyone-clip-zeroshot/evaluate_and_review",
                                  ctx=dict(view=scenes.view(), params=dict(pred_field="auto", gt_field="ground_truth",
                                                                           eval_key="op_eval", confidence_below=0.5)))
    result.raise_exceptions()
    assert result.result["map"] == pytest.approx(1.0) and "op_eval" in result.result["report"]
    assert result.result["tagged"] == mismatched  # ground truth against itself: only CLIP's disagreements
