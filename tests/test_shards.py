"""Sharded runs in one process: how a run is split and queued, what a shard reads from the run's
record, and what ``run_status`` reports (several real workers: test_workers.py)."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import fiftyone as fo
import fiftyone.operators as foo
import pytest
from bson import ObjectId
from fiftyone.core.odm import get_db_conn
from fiftyone.operators.delegated import DelegatedOperationService
from fiftyone.operators.executor import ExecutionResult

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.labeling.runs import claim_store
from fiftyone_clip_zeroshot.labeling.runs.detect import DetectJob
from fiftyone_clip_zeroshot.labeling.runs.jobs import LabelingError
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun
from fiftyone_clip_zeroshot.labeling.runs.shard_states import DETECT_URI
from fiftyone_clip_zeroshot.labeling.runs.shards import shard_job_options, shard_view
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset

PROMPTS = ["red circle", "blue square"]
RUN = dict(model="shapes-world", device="cpu", heatmap_size=96, window_scales=(0.2, 0.4), window_stride=0.5)


@pytest.fixture()
def dataset(tmp_root, request):
    ds = load_shapes_dataset(f"shards-{request.node.name}", 5, tmp_root / "images" / request.node.name, seed=4,
                             width=320, height=240)
    ds.persistent = True
    yield ds
    DelegatedOperationService().delete_for_dataset(ds._doc.id)
    ds.delete()


def _boxes(samples, field):
    return [[(d.label, d.bounding_box, d.confidence) for d in (x or [])] for x in samples.values(f"{field}.detections")]


def test_shards_are_balanced_disjoint_id_ranges_queued_as_detect_operations(dataset):
    fz.detect(dataset, PROMPTS, label_field="clip", shards=3, **RUN)
    run = DetectRun.load(dataset, "clip")
    assert run.state == "sharded" and [s["samples"] for s in run.shards] == [2, 2, 1]
    parts = [set(shard_view(dataset, shard).values("id")) for shard in run.shards]
    assert set.union(*parts) == set(dataset.values("id")) and sum(map(len, parts)) == len(dataset)
    queued = DelegatedOperationService().get_queued_operations(operator=DETECT_URI, dataset_name=dataset.name)
    assert sorted(str(op.id) for op in queued) == sorted(s["operation_id"] for s in run.shards)
    status = fz.run_status(dataset, "clip")
    assert status.state == "queued" and [(s.state, s.done) for s in status.shards] == [("queued", 0)] * 3
    assert "shard 3: queued    0/1 samples" in str(status)
    assert not dataset.exists("clip")  # nothing labelled until a worker runs them


def test_shards_run_as_one_run_would_and_replace_the_previous_run(dataset, plugin_dir, tmp_root):
    fz.detect(dataset, ["red circle", "green triangle"], label_field="clip", progress=False, **RUN)
    old_maps = [Path(p) for p in dataset.values("clip_heatmap_green_triangle.map_path")]
    assert all(p.is_file() for p in old_maps)
    fz.detect(dataset, PROMPTS, label_field="single", progress=False, **RUN)
    fz.detect(dataset, PROMPTS, label_field="clip", shards=2, **RUN)
    DelegatedOperationService().execute_queued_operations(operator=DETECT_URI, dataset_name=dataset.name)
    dataset.reload()
    assert _boxes(dataset, "clip") == _boxes(dataset, "single")
    assert not dataset.has_sample_field("clip_heatmap_green_triangle")  # no shard left a map in it
    assert not any(p.exists() for p in old_maps)
    status = fz.run_status(dataset, "clip")
    assert status.state == "done" and [(s.state, s.done, s.samples) for s in status.shards] == [
        ("completed", 3, 3), ("completed", 2, 2)]


def test_a_shard_whose_samples_were_deleted_completes_with_nothing_to_do(dataset, plugin_dir):
    fz.detect(dataset, PROMPTS, label_field="clip", shards=2, **RUN)
    run = DetectRun.load(dataset, "clip")
    dataset.delete_samples(shard_view(dataset, run.shards[1]))
    DelegatedOperationService().execute_queued_operations(operator=DETECT_URI, dataset_name=dataset.name)
    status = fz.run_status(dataset, "clip")
    assert status.state == "done" and [(s.state, s.done) for s in status.shards] == [("completed", 3), ("completed", 0)]
    assert dataset.count("clip") == 3


def test_a_field_with_shards_queued_is_refused_to_other_runs_but_not_to_its_shards(dataset, shapes_model):
    fz.detect(dataset, PROMPTS, label_field="clip", shards=2, **RUN)
    run = DetectRun.load(dataset, "clip")
    with pytest.raises(LabelingError, match=f"being written by sharded run {run.run_id}: 2 of 2 shards"):
        fz.detect(dataset, PROMPTS, label_field="clip", **RUN)
    view = shard_view(dataset, run.shards[0])
    job = DetectJob(view, device="cpu", **shard_job_options(view, "clip", run.run_id, 0))
    assert job.prompts == PROMPTS and job.total == 3 and job.heatmap_dir == Path(run.heatmap_dir)
    with pytest.raises(LabelingError, match="a newer run replaced it"):
        shard_job_options(dataset, "clip", "20260101T000000-000000")


def test_shards_need_a_persistent_dataset_and_a_positive_count_and_write_nothing_otherwise(dataset):
    with pytest.raises(LabelingError, match="shards must be a positive integer"):
        fz.detect(dataset, PROMPTS, label_field="clip", shards=0, **RUN)
    dataset.persistent = False
    with pytest.raises(LabelingError, match="set dataset.persistent = True"):
        fz.detect(dataset, PROMPTS, label_field="clip", shards=2, **RUN)
    assert not dataset.has_field("clip") and DetectRun.load(dataset, "clip") is None


def test_shards_of_a_target_already_labelled_finish_with_nothing_to_do(dataset, capsys):
    fz.detect(dataset, PROMPTS, label_field="clip", progress=False, **RUN)
    record = DetectRun.load(dataset, "clip")
    fz.detect(dataset, PROMPTS, label_field="clip", skip_existing=True, shards=2, **RUN)
    assert "nothing to do: every sample already has 'clip'" in capsys.readouterr().out
    assert DetectRun.load(dataset, "clip") == record  # nothing queued, recorded or claimed
    assert not DelegatedOperationService().get_queued_operations(operator=DETECT_URI, dataset_name=dataset.name)
    fz.detect(dataset, PROMPTS, label_field="clip", shards=2, **RUN)  # the field is free


def test_a_failure_while_queuing_leaves_no_shard_queued(dataset, monkeypatch):
    queue = DelegatedOperationService.queue_operation
    calls = []

    def lost_connection(self, **kwargs):
        calls.append(kwargs)
        if len(calls) == 2:
            raise ConnectionError("database went away")
        return queue(self, **kwargs)

    monkeypatch.setattr(DelegatedOperationService, "queue_operation", lost_connection)
    with pytest.raises(ConnectionError):
        fz.detect(dataset, PROMPTS, label_field="clip", shards=3, **RUN)
    assert not DelegatedOperationService().list_operations(operator=DETECT_URI, dataset_name=dataset.name)
    assert DetectRun.load(dataset, "clip").state == "failed" and fz.run_status(dataset, "clip").state == "failed"
    monkeypatch.undo()
    fz.detect(dataset, PROMPTS, label_field="clip", shards=3, **RUN)  # the field is free


def test_detect_operator_queues_one_shard_per_worker(dataset, plugin_dir):
    params = dict(prompts=", ".join(PROMPTS), label_field="clip", model="shapes-world", device="cpu", workers=2,
                  view_target="DATASET")
    result = foo.execute_operator(DETECT_URI, ctx=dict(view=dataset.view(), params=params))
    result.raise_exceptions()
    run = DetectRun.load(dataset, "clip")
    assert len(run.shards) == 2 and run.prompts == PROMPTS
    assert fz.run_status(dataset, "clip").state == "queued"
    assert dataset.get_field("clip").document_type is fo.Detections


def test_panel_shows_where_the_shards_of_the_inspected_run_stand(dataset, plugin_dir):
    fz.detect(dataset, PROMPTS, label_field="clip", shards=2, **RUN)
    panel = "@clip-zeroshot/fiftyone-clip-zeroshot/clip_zeroshot_panel"
    result = foo.execute_operator(panel, ctx=dict(view=dataset.view(), params=dict(
        value="clip", panel_id="panel-1", __method__="on_change_field", panel_state={})))
    result.raise_exceptions()
    shown = str(result.to_json())
    assert "(2 queued; 0/5 samples)" in shown and "shard 2: queued    0/2 samples" in shown


def test_requeue_reruns_failed_lost_and_deleted_shards_in_one_call_and_the_panel_offers_it(dataset, plugin_dir):
    fz.detect(dataset, PROMPTS, label_field="clip", shards=3, **RUN)
    service = DelegatedOperationService()
    failed, lost, deleted = [ObjectId(s["operation_id"]) for s in DetectRun.load(dataset, "clip").shards]
    service.set_failed(failed, result=ExecutionResult(error="CUDA error: an illegal memory access"))
    service.set_running(lost)  # a worker took it, then died: no heartbeat ever came
    long_ago = datetime.now(timezone.utc) - timedelta(seconds=claim_store.STALE_AFTER + 5)
    get_db_conn()["delegated_ops"].update_one({"_id": lost}, {"$set": {"started_at": long_ago}})
    service.delete_operation(deleted)
    status = fz.run_status(dataset, "clip")
    assert [s.state for s in status.shards] == ["failed", "lost", "missing"] and status.state == "failed"
    assert status.shards[1].error.startswith("no heartbeat for 6") and "(limit 60 s)" in status.shards[1].error
    panel = "@clip-zeroshot/fiftyone-clip-zeroshot/clip_zeroshot_panel"
    shown = foo.execute_operator(panel, ctx=dict(view=dataset.view(), params=dict(
        value="clip", panel_id="panel-1", __method__="on_change_field", panel_state={})))
    shown.raise_exceptions()
    assert "Requeue 3 lost or failed shards" in str(shown.to_json())
    requeued = foo.execute_operator(panel, ctx=dict(view=dataset.view(), params=dict(
        panel_id="panel-1", __method__="on_requeue", panel_state=dict(inspect_field="clip", requeue=3))))
    requeued.raise_exceptions()
    assert "Requeued 3 shards of run" in str(requeued.to_json())
    assert service.get(lost).run_state == "failed"
    assert fz.run_status(dataset, "clip").state == "queued"
    service.execute_queued_operations(operator=DETECT_URI, dataset_name=dataset.name)
    dataset.reload()
    assert fz.run_status(dataset, "clip").state == "done" and dataset.count("clip") == len(dataset)
    fz.detect(dataset, PROMPTS, label_field="clip", **RUN)  # the run's shards ended: the field is free
