"""One run over several workers, for real: a ``mongod`` of the test's own on loopback, the run
queued as shards, ``fiftyone delegated launch`` processes claiming them; a killed worker, and a
database that stops mid-run. Every process is started here and stopped by its pid."""

import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # real worker processes: the full tier only
REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cluster", REPO / "benchmarks" / "cluster.py")
cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cluster)

IMAGES = 16
SHARDS = 4
PER_SHARD = IMAGES // SHARDS
STALE_AFTER = 8  # seconds: the heartbeat limit in this deployment (60 by default)
RUN = "dict(model='shapes-world', device='cpu', heatmap_size=96, window_scales=(0.2, 0.4), window_stride=0.5)"
PREPARE = f"""
import json, fiftyone as fo, fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset
ds = load_shapes_dataset("workers", {IMAGES}, "{{images}}", seed=11, width=320, height=240)
ds.persistent = True
fz.detect(ds, ["red circle", "blue square"], label_field="single", progress=False, **{RUN})
print(json.dumps(len(ds)))
"""
QUEUE = f"""
import json, fiftyone as fo, fiftyone_clip_zeroshot as fz
ds = fo.load_dataset("workers")
fz.detect(ds, ["red circle", "blue square"], label_field="{{field}}", shards={SHARDS}, **{RUN})
print(json.dumps([s["operation_id"] for s in ds.get_run_info("clip_zeroshot_{{field}}").config.shards]))
"""
REQUEUE = """
import json, fiftyone as fo, fiftyone_clip_zeroshot as fz
from bson import ObjectId
from fiftyone.operators.delegated import DelegatedOperationService
ds = fo.load_dataset("workers")
before = fz.run_status(ds, "killed")
lost = [s for s in before.shards if s.state == "lost"]
after = fz.requeue(ds, "killed")
victim = [str(DelegatedOperationService().get(ObjectId(s.operation_id)).run_state) for s in lost]
error = lost[0].error if lost else None
print(json.dumps(dict(before=dict(state=before.state, lost=[s.operation_id for s in lost], error=error),
                      after=dict(state=after.state), victim=victim)))
"""
CHECK = """
import json, os, fiftyone as fo, fiftyone_clip_zeroshot as fz
ds = fo.load_dataset("workers")
status = fz.run_status(ds, "{field}")
boxes = lambda field: [[(d.label, d.bounding_box, d.confidence) for d in (x or [])] for x in ds.values(field)]
maps = ds.values("{field}_heatmap_red_circle.map_path") + ds.values("{field}_heatmap_blue_square.map_path")
print(json.dumps(dict(same=boxes("{field}.detections") == boxes("single.detections"), labelled=ds.count("{field}"),
                      maps=sum(bool(p) and os.path.exists(p) for p in maps), state=status.state,
                      shards=[[s.state, s.done, s.samples] for s in status.shards])))
"""


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    """One mongod, the plugin installed, and a 16-image dataset labelled once in one process; a
    short heartbeat limit, so that a killed worker's shard is lost within seconds."""
    root = tmp_path_factory.mktemp("deployment")
    mongo = cluster.LocalMongo(root).start()
    env = {**cluster.environment(mongo, root), "CLIP_ZEROSHOT_STALE_AFTER": str(STALE_AFTER)}
    try:
        assert cluster.python(env, PREPARE.format(images=root / "images")) == IMAGES
        yield mongo, env, root
    finally:
        mongo.stop()


def _completed(mongo, ids):
    states = {str(op["_id"]): op["run_state"] for op in mongo.operations()}
    if any(states.get(i) == "failed" for i in ids):
        raise AssertionError(f"a shard failed: {states}")
    return all(states.get(i) == "completed" for i in ids)


def _claims(logs, operation_id):
    return sum(log.read_text().count(f"Running operation {operation_id}") for log in logs)


def test_two_workers_run_four_shards_each_sample_once(deployment):
    mongo, env, root = deployment
    ids = cluster.python(env, QUEUE.format(field="sharded"))
    assert len(ids) == SHARDS
    logs = [root / f"worker-{i}.log" for i in range(2)]
    workers = [cluster.start_worker(env, log) for log in logs]
    try:
        cluster.wait_for(lambda: _completed(mongo, ids), 400, "four shards completed")
    finally:
        for worker in workers:
            cluster.stop(worker)
    assert [_claims(logs, i) for i in ids] == [1] * SHARDS  # each shard claimed by exactly one worker
    result = cluster.python(env, CHECK.format(field="sharded"))
    assert result["same"] and result["labelled"] == IMAGES and result["maps"] == 2 * IMAGES
    assert result["state"] == "done" and result["shards"] == [["completed", PER_SHARD, PER_SHARD]] * SHARDS


def test_killed_worker_shard_is_lost_requeued_in_one_call_and_nothing_is_lost_or_doubled(deployment, say):
    mongo, env, root = deployment
    ids = cluster.python(env, QUEUE.format(field="killed"))
    first = cluster.start_worker(env, root / "killed-0.log")
    try:
        def running_midway():
            return next((str(op["_id"]) for op in mongo.operations() if op["run_state"] == "running"
                         and 0.2 <= ((op.get("status") or {}).get("progress") or 0) < 0.9), None)

        victim = cluster.wait_for(running_midway, 300, "a shard half done", every=0.05)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        cluster.stop(first)
    killed = time.monotonic()
    assert next(op for op in mongo.operations() if str(op["_id"]) == victim)["run_state"] == "running"
    time.sleep(max(0.0, STALE_AFTER + 1 - (time.monotonic() - killed)))  # past the heartbeat limit
    recovery = cluster.python(env, REQUEUE)
    checked = time.monotonic() - killed
    assert recovery["before"]["state"] == "lost" and recovery["before"]["lost"] == [victim]
    assert "no heartbeat for" in recovery["before"]["error"] or "is gone" in recovery["before"]["error"]
    assert recovery["after"]["state"] == "queued" and recovery["victim"] == ["failed"]
    rerun = [str(op["_id"]) for op in mongo.operations() if str(op["_id"]) not in ids and op["run_state"] == "queued"]
    assert len(rerun) == 1
    second = cluster.start_worker(env, root / "killed-1.log")
    try:
        remaining = [i for i in ids if i != victim] + rerun
        cluster.wait_for(lambda: _completed(mongo, remaining), 400, "the other shards and the rerun completed")
    finally:
        cluster.stop(second)
    say(f"  lost worker: SIGKILL at 0 s; run_status 'lost' and requeue at {checked:.0f} s (limit {STALE_AFTER} s); "
        f"a new worker finished every shard at {time.monotonic() - killed:.0f} s")
    result = cluster.python(env, CHECK.format(field="killed"))
    assert result["same"] and result["labelled"] == IMAGES and result["maps"] == 2 * IMAGES
    assert result["state"] == "done" and result["shards"] == [["completed", PER_SHARD, PER_SHARD]] * SHARDS


def test_database_stopping_mid_run_is_a_clear_error_and_skip_existing_finishes(tmp_path):
    mongo = cluster.LocalMongo(tmp_path).start()
    env = cluster.environment(mongo, tmp_path)
    script = textwrap.dedent(f"""
        import json, fiftyone as fo, fiftyone_clip_zeroshot as fz
        from fiftyone_clip_zeroshot.shapes.dataset import load_shapes_dataset
        ds = load_shapes_dataset("outage", 12, "{tmp_path / 'images'}", seed=5, width=320, height=240)
        ds.persistent = True
        fz.detect(ds, ["red circle"], label_field="clip", progress=lambda done, total: print("done", done, flush=True),
                  **{RUN})
    """)
    try:
        process = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            for line in process.stdout:
                if line.strip() == "done 6":
                    mongo.kill()
                    break
            _, stderr = process.communicate(timeout=180)
        finally:
            cluster.stop(process)
        assert process.returncode == 1
        assert "fiftyone_clip_zeroshot.labeling.runs.jobs.DatabaseError: lost the database after" in stderr
        assert "rerun with skip_existing=True" in stderr
        mongo.start()
        resumed = cluster.python(env, textwrap.dedent(f"""
            import json, fiftyone as fo, fiftyone_clip_zeroshot as fz
            ds = fo.load_dataset("outage")
            kept = ds.count("clip")
            seen = []
            fz.detect(ds, ["red circle"], label_field="clip", skip_existing=True,
                      progress=lambda done, total: seen.append(total), **{RUN})
            pairs = zip(ds.values("clip"), ds.values("clip_heatmap_red_circle"))
            whole = all((d is None) == (h is None) for d, h in pairs)
            print(json.dumps(dict(kept=kept, resumed=seen[-1], labelled=ds.count("clip"), whole=whole)))
        """))
    finally:
        mongo.stop()
    assert 0 < resumed["kept"] <= 6 and resumed["resumed"] == 12 - resumed["kept"]
    assert resumed["labelled"] == 12 and resumed["whole"]
