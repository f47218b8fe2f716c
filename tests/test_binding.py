"""Labels always land on their own sample: MongoDB kills a cursor that sits idle, and FiftyOne then
resumes a view's iteration with ``skip(index)``, which goes wrong on a view whose membership the
run changes (``skip_existing``). Here the cursor dies for real (the error MongoDB raises, raised
inside FiftyOne's own iteration) and every label must equal a clean run's on the same image."""

import os

import fiftyone as fo
import fiftyone.core.dataset as fod
import fiftyone.core.view as fov
import pytest
from fiftyone.operators.delegated import DelegatedOperationService
from pymongo.errors import CursorNotFound

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.labeling.fo_private import select_targets
from fiftyone_clip_zeroshot.labeling.runs import jobs
from fiftyone_clip_zeroshot.labeling.runs.shard_states import DETECT_URI
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset

PROMPTS = ["red circle", "blue square"]
RUN = dict(model="shapes-world", device="cpu", method="proposals", heatmaps=False, verify_margins=(0.35,))
SCENES = 14
DIES_AFTER = 4  # samples read by sample iterations before the cursor is killed


@pytest.fixture(scope="module")
def scenes(tmp_root):
    """14 scenes and each one's labels from a clean run (``reference``)."""
    dataset = load_shapes_dataset("binding", SCENES, tmp_root / "images" / "binding", seed=8, width=240, height=180,
                                  classes=tuple(PROMPTS), persistent=True)
    fz.detect(dataset, PROMPTS, label_field="reference", progress=False, **RUN)
    assert sum(map(len, _boxes(dataset, "reference"))) > SCENES  # the comparison below has boxes to compare
    yield dataset
    dataset.delete()


@pytest.fixture()
def cursor_dies(monkeypatch):
    """Arms a cursor death: ``cursor_dies()`` makes the next read after ``DIES_AFTER`` samples read
    by sample iterations raise CursorNotFound (once), as when MongoDB reaps a cursor left idle for
    10 minutes, and FiftyOne resumes with skip. As after such a wait, each label is saved at once
    (instead of every 2 s), so the database holds every finished sample when the cursor dies."""
    read = [None]

    def dying(docs):
        for doc in docs:
            yield doc
            if read[0] is not None:
                read[0] += 1
                if read[0] == DIES_AFTER:
                    raise CursorNotFound("cursor id 1 not found (killed by the test)", 43)

    def wrap(aggregate):
        def _aggregate(self, *args, **kwargs):
            docs = aggregate(self, *args, **kwargs)
            return dying(docs) if kwargs.get("detach_frames") else docs  # sample iteration only

        return _aggregate

    def arm():
        read[0] = 0

    monkeypatch.setattr(fod.Dataset, "_aggregate", wrap(fod.Dataset._aggregate))
    monkeypatch.setattr(fov.DatasetView, "_aggregate", wrap(fov.DatasetView._aggregate))
    monkeypatch.setattr(jobs, "SAVE_EVERY_S", 0)
    arm.died = lambda: read[0] is not None and read[0] > DIES_AFTER
    return arm


def _boxes(samples, field):
    return [[(d.label, d.bounding_box, d.confidence) for d in (x.detections if x else [])]
            for x in samples.values(field)]


def _same_as_reference(samples, field) -> bool:
    """Whether every sample's ``field`` equals the clean run's; if not, says how many differ."""
    got, reference = _boxes(samples, field), _boxes(samples, "reference")
    missing = sum(not mine and bool(clean) for mine, clean in zip(got, reference))
    wrong = sum(bool(mine) and mine != clean for mine, clean in zip(got, reference))
    assert got == reference, f"{wrong} samples hold another image's labels, {missing} are unlabelled"
    return True


def _first_two_labelled(scenes, field):
    """``field`` on the first 2 samples only (what the ``skip_existing`` runs below finish)."""
    fz.detect(scenes.limit(2), PROMPTS, label_field=field, progress=False, **RUN)


def test_a_cursor_that_dies_mid_run_of_skip_existing_puts_no_label_on_another_sample(scenes, cursor_dies):
    _first_two_labelled(scenes, "resumed")
    cursor_dies()
    fz.detect(scenes, PROMPTS, label_field="resumed", skip_existing=True, progress=False, **RUN)
    assert cursor_dies.died()  # the cursor did die, and the run read on
    assert _same_as_reference(scenes, "resumed")


def test_with_images_batched_together_too(scenes, cursor_dies):
    _first_two_labelled(scenes, "batched")
    cursor_dies()
    fz.detect(scenes, PROMPTS, label_field="batched", skip_existing=True, image_batch_size=3, progress=False, **RUN)
    assert cursor_dies.died()
    assert _same_as_reference(scenes, "batched")


def test_a_sample_deleted_mid_run_is_passed_over_and_the_others_keep_their_own(scenes):
    copy = scenes.clone("binding-copy")
    clean = dict(zip(copy.values("id"), _boxes(copy, "reference")))
    gone = copy.skip(6).first().id

    def delete_one(done, total):
        if done == 3:
            copy.delete_samples([gone])

    fz.detect(copy, PROMPTS, label_field="clip", progress=delete_one, **RUN)
    assert dict(zip(copy.values("id"), _boxes(copy, "clip"))) == {i: b for i, b in clean.items() if i != gone}
    copy.delete()


def test_a_view_that_picks_samples_is_not_rerun_per_chunk_yet_its_filters_still_hold(scenes):
    """``take``, ``sort_by``, ``limit`` and ``skip`` chose the targets once; per chunk, the samples are
    found by id (a scan of the whole dataset per chunk otherwise) and the view's filters applied."""
    copy = scenes.clone("binding-picking")
    view = copy.sort_by("filepath", reverse=True).skip(1).take(8, seed=3).limit(6).exists("clip", False)
    targets = view.values("id")
    query = select_targets(view, targets)
    assert [type(stage).__name__ for stage in query._stages] == ["Select", "Exists"]
    assert sorted(query.values("id")) == sorted(targets)
    late = targets[-1]

    def label_one(done, total):  # another run labels a target meanwhile: it leaves the filter
        if done == 2:
            sample = copy[late]
            sample["clip"] = fo.Detections()
            sample.save()

    fz.detect(view, PROMPTS, label_field="clip", progress=label_one, **RUN)
    labelled = dict(zip(copy.values("id"), copy.values("clip.detections")))
    assert labelled[late] == [], "the sample that left the filter was passed over, its label kept"
    assert sorted(i for i, d in labelled.items() if d is not None) == sorted(targets)
    copy.delete()


def test_shards_of_a_skip_existing_run_whose_cursor_dies(scenes, plugin_dir, cursor_dies):
    _first_two_labelled(scenes, "sharded")
    fz.detect(scenes, PROMPTS, label_field="sharded", skip_existing=True, shards=2, **RUN)
    cursor_dies()
    DelegatedOperationService().execute_queued_operations(operator=DETECT_URI, dataset_name=scenes.name)
    scenes.reload()
    assert cursor_dies.died()
    assert fz.run_status(scenes, "sharded").state == "done"
    assert _same_as_reference(scenes, "sharded")


def test_apply_model_whose_cursor_dies(scenes, cursor_dies):
    """On a fixed view FiftyOne's resume is right: every label is there. On a view that the run
    shrinks, FiftyOne's own loop pairs its loader's images with the wrong samples after a resume,
    and skips some (left unlabelled: its loop, not ours); our model checks each image's sample id
    and decodes the sample's own file instead, so no sample gets another's labels."""
    model = fz.zero_shot_model(PROMPTS, **{k: v for k, v in RUN.items() if k not in ("heatmaps", "device")})
    cursor_dies()
    scenes.apply_model(model, label_field="applied", batch_size=3, num_workers=0)
    assert cursor_dies.died() and _same_as_reference(scenes, "applied")
    scenes.limit(2).apply_model(model, label_field="shrinking", batch_size=3, num_workers=0)
    cursor_dies()
    scenes.exists("shrinking", False).apply_model(model, label_field="shrinking", batch_size=3, num_workers=0)
    assert cursor_dies.died()
    got = _boxes(scenes, "shrinking")
    assert all(mine in ([], reference) for mine, reference in zip(got, _boxes(scenes, "reference")))
    assert sum(map(len, got[2:])) > 0  # the view's run did label samples


def test_a_view_of_other_samples_is_never_confused_for_the_dataset(scenes):
    """The ids are the run's: labels of a filtered view go to exactly its samples."""
    view = scenes.skip(3).limit(5)
    fz.detect(view, PROMPTS, label_field="part", progress=False, **RUN)
    assert scenes.exists("part").values("id") == view.values("id")
    assert _boxes(view, "part") == _boxes(view, "reference")


def test_a_sample_that_leaves_the_target_keeps_its_maps_and_leaves_no_new_one(scenes, monkeypatch):
    """Labels are written together (``LabelWriter``): a sample that left the view's filter after it
    was labelled, before the write, keeps its earlier labels and their PNG maps, and the maps made
    for it are deleted, not left behind."""
    monkeypatch.setattr(jobs, "SAVE_EVERY_S", 1000)  # one write, at the end of the run
    copy = scenes.clone("binding-maps")
    maps = dict(RUN, heatmaps=True, heatmap_size=96)  # 96 x 72 cells: PNGs
    fz.detect(copy, PROMPTS, label_field="clip", progress=False, **maps)
    field = "clip_heatmap_red_circle"
    copy.tag_samples("go")
    late = copy.values("id")[-1]
    before = copy[late][field].map_path

    def untag(done, total):
        if done == 1:
            copy.select(late).untag_samples("go")

    fz.detect(copy.match_tags("go"), PROMPTS, label_field="clip", progress=untag, **maps)
    kept = copy[late][field].map_path
    assert kept == before and os.path.exists(kept)  # its earlier map, still on disk
    run_dir = os.path.dirname(copy[copy.values("id")[0]][field].map_path)
    assert run_dir != os.path.dirname(before)
    assert not [name for name in os.listdir(run_dir) if name.startswith(late)]  # no map of it in the new run
    copy.delete()
