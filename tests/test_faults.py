"""Fault matrix: bad media, prompts, models, options, fields, interrupted runs, unwritable heatmaps
and two runs on one field (more with real processes: a killed worker and a database that stops,
in test_workers.py).

Every case must end in one clear message, no partial or garbage label, and the other samples
processed. The operator path reuses the same validation (see test_fiftyone.py).
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import fiftyone as fo
import numpy as np
import pytest
import torch
from PIL import Image

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot import ImageLoadError, ModelLoadError, OptionsError, load_model
from fiftyone_clip_zeroshot.core.geometry.images import load_image
from fiftyone_clip_zeroshot.labeling.runs import claim_store
from fiftyone_clip_zeroshot.labeling.runs.detect import DetectJob
from fiftyone_clip_zeroshot.labeling.runs.jobs import LabelingError, run_job
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun, run_key
from fiftyone_clip_zeroshot.shapes.world import render_scene

PROMPTS = ["red circle", "blue square"]
FAST = dict(window_scales=(0.25, 0.5), window_stride=0.5, verify_margins=(0.35,))
EXIF_ORIENTATION = 0x0112


def _scene(index: int = 0, size: tuple[int, int] = (240, 180)) -> Image.Image:
    return render_scene(5, index, *size).image


def _dataset(name: str, paths: list[Path]) -> fo.Dataset:
    dataset = fo.Dataset(name, overwrite=True)
    dataset.add_samples([fo.Sample(filepath=str(p)) for p in paths], progress=False)
    return dataset


def _jpegs(folder: Path, count: int, size: tuple[int, int] = (240, 180)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        paths.append(folder / f"scene-{index}.jpg")
        _scene(index, size).save(paths[-1], quality=90)
    return paths


def _assert_whole_or_absent(dataset: fo.Dataset, fields: list[str]) -> int:
    """Each sample has every field of the run or none of them; PNG maps exist. Returns labelled count."""
    labelled = 0
    for sample in dataset.select_fields(fields):
        present = [sample[f] is not None for f in fields]
        assert all(present) or not any(present), f"partial labels on {sample.id}: {dict(zip(fields, present))}"
        labelled += all(present)
        for field in fields[1:]:
            if sample[field] is not None and sample[field].map_path:
                assert Path(sample[field].map_path).is_file()
    return labelled


# --- media ----------------------------------------------------------------------------------------

def _missing(path: Path) -> None:
    path.unlink()


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def _not_an_image(path: Path) -> None:
    path.write_text("this is not a JPEG")


@pytest.mark.parametrize("damage", [_missing, _truncated, _not_an_image], ids=lambda f: f.__name__.strip("_"))
def test_broken_file_is_listed_and_the_other_samples_are_labelled(damage, shapes_model, tmp_path, capsys):
    paths = _jpegs(tmp_path, 3)
    damage(paths[1])
    dataset = _dataset(f"broken-{damage.__name__}", paths)
    fields = fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", progress=False, **FAST)
    bad = dataset.skip(1).first()
    assert bad.clip is None and bad.clip_heatmap_red_circle is None
    assert all(d is not None for d in dataset.exclude(bad.id).values("clip"))
    assert _assert_whole_or_absent(dataset, fields) == 2
    report = capsys.readouterr().out
    assert "1 of 3 samples failed" in report and f"{bad.id}: ImageLoadError: cannot read image" in report


def _gray(img): return img.convert("L")
def _rgba(img): return img.convert("RGBA")
def _palette(img): return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)
def _sixteen_bit(img): return Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257)
def _cmyk(img): return img.convert("CMYK")


@pytest.mark.parametrize("convert, suffix, max_error", [
    (_gray, ".png", None), (_rgba, ".png", 0), (_palette, ".png", 12), (_sixteen_bit, ".png", None),
    (_cmyk, ".jpg", 12),
], ids=["gray", "rgba", "palette", "16bit", "cmyk"])
def test_image_modes_decode_to_the_rgb_image_and_detect(convert, suffix, max_error, shapes_model, tmp_path):
    original = _scene()
    path = tmp_path / f"image{suffix}"
    convert(original).save(path)
    pixels = load_image(path)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, original.height, original.width)
    expected = np.asarray(original if max_error is not None else original.convert("L").convert("RGB"), np.float32)
    error = np.abs(pixels.permute(1, 2, 0).numpy().astype(np.float32) - expected).mean()
    assert error <= (max_error if max_error is not None else 1.0)
    dataset = _dataset(f"mode-{path.name}-{convert.__name__}", [path])
    fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", progress=False, **FAST)
    assert dataset.first().clip is not None


def test_exif_rotated_jpeg_gets_boxes_of_the_displayed_image(shapes_model, tmp_path):
    upright = _scene(2)
    upright.save(tmp_path / "upright.jpg", quality=95)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6  # stored rotated; viewers turn it 90° clockwise
    upright.transpose(Image.Transpose.ROTATE_90).save(tmp_path / "rotated.jpg", quality=95, exif=exif)
    dataset = _dataset("exif", [tmp_path / "upright.jpg", tmp_path / "rotated.jpg"])
    fz.detect(dataset, ["red circle", "blue square", "green triangle", "yellow star"], model=shapes_model,
              label_field="clip", progress=False)
    straight, rotated = ([(d.label, d.bounding_box) for d in s.clip.detections] for s in dataset)
    assert straight and [label for label, _ in straight] == [label for label, _ in rotated]
    assert np.allclose([b for _, b in straight], [b for _, b in rotated], atol=0.03)


@pytest.mark.parametrize("hw", [(10, 10), (1, 4000), (4000, 1)], ids=["10x10", "1x4000", "4000x1"])
def test_tiny_and_strip_images_are_localized_without_error(hw, shapes_model, tmp_path):
    path = tmp_path / "odd.png"
    Image.fromarray(np.full((*hw, 3), 180, np.uint8)).save(path)
    dataset = _dataset(f"odd-{hw[0]}x{hw[1]}", [path])
    fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", progress=False)
    sample = dataset.first()
    assert sample.clip is not None
    heat = sample.clip_heatmap_red_circle.map
    scale = min(1.0, 256 / max(hw))  # the heatmap keeps the image's aspect ratio, never upsampled
    assert heat.shape == (max(1, round(hw[0] * scale)), max(1, round(hw[1] * scale)))


@pytest.mark.slow  # a 50-MP image in a subprocess
def test_fifty_megapixel_image_runs_at_full_resolution_in_bounded_memory(tmp_path):
    """A 50-MP JPEG in a fresh process: detections come back and peak memory stays far below 24 GB."""
    path = tmp_path / "big.jpg"
    height, width = 5780, 8660
    red = np.broadcast_to(np.linspace(0, 255, width), (height, width))
    blue = np.broadcast_to(np.linspace(255, 0, height)[:, None], (height, width))
    Image.fromarray(np.stack([red, np.full((height, width), 128.0), blue], -1).astype(np.uint8)).save(path, quality=80)
    script = textwrap.dedent(f"""
        import resource
        from fiftyone_clip_zeroshot import load_model, localize
        results = localize({str(path)!r}, ["red circle"], load_model("shapes-world", device="cpu"))
        print(results[0].heatmap.shape, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["(171,", "256)"]
    assert int(out[-1]) < 6 * 1024, f"peak memory {out[-1]} MiB"


def test_video_dataset_is_refused_with_a_way_forward(shapes_model):
    dataset = fo.Dataset("videos", overwrite=True)
    dataset.add_sample(fo.Sample(filepath="/data/clip.mp4"))
    with pytest.raises(LabelingError, match=r"only image collections.*to_frames"):
        fz.detect(dataset, PROMPTS, model=shapes_model, progress=False)


# --- prompts --------------------------------------------------------------------------------------

@pytest.mark.parametrize("prompts", [[], "", "   ", ["red circle", " "], None],
                         ids=["empty", "blank", "spaces", "one-blank", "none"])
def test_empty_prompts_are_refused(prompts, shapes_model):
    with pytest.raises(OptionsError, match="prompts must be a non-empty list"):
        fz.localize(np.zeros((64, 64, 3), np.uint8), prompts, shapes_model)


def test_duplicate_prompts_count_once(shapes_model, tmp_path):
    dataset = _dataset("dupes", _jpegs(tmp_path, 1))
    fields = fz.detect(dataset, ["red circle", "red circle ", "blue square", "red circle"], model=shapes_model,
                       label_field="clip", progress=False, **FAST)
    assert fields == ["clip", "clip_heatmap_red_circle", "clip_heatmap_blue_square"]


def test_three_hundred_non_ascii_and_overlong_prompts(shapes_model, tmp_path):
    prompts = [f"object number {i}" for i in range(297)] + ["círculo rojo", "红色圆圈", "red circle " * 50]
    dataset = _dataset("many-prompts", _jpegs(tmp_path, 1))
    with pytest.warns(UserWarning, match="truncated"):
        fields = fz.detect(dataset, prompts, model=shapes_model, label_field="clip", progress=False,
                           heatmap_size=32, **FAST)
    assert len(fields) == 301 == len(set(fields))
    assert "clip_heatmap_c_rculo_rojo" in fields and "clip_heatmap_prompt" in fields
    sample = dataset.first()
    assert all(isinstance(sample[f], fo.Heatmap) for f in fields[1:])
    assert {d.label for d in sample.clip.detections} <= set(prompts)


# --- model and options ----------------------------------------------------------------------------

@pytest.mark.parametrize("options, message", [
    (dict(window_stride=-0.5), "window_stride must be in"),
    (dict(window_scales=(0.5, 1.5)), "window_scales must be fractions"),
    (dict(confidence_thresh=1.5), "confidence_thresh must be in"),
    (dict(confidence_thresh=-0.1), "confidence_thresh must be in"),
    (dict(batch_size=0), "batch_size must be >= 1"),
    (dict(method="grad-cam"), "method must be one of"),
    (dict(windows=3), r"unknown option\(s\) \['windows'\]"),
], ids=["negative-stride", "window-larger-than-image", "thresh-high", "thresh-low", "batch-0", "method", "unknown"])
def test_bad_options_are_refused_before_any_work(options, message, tmp_path):
    dataset = _dataset("options", _jpegs(tmp_path, 1))
    with pytest.raises(OptionsError, match=message):
        fz.detect(dataset, PROMPTS, model="model-that-would-fail-to-load", progress=False, **options)
    assert not dataset.has_field("clip_detections") and run_key("clip_detections") not in dataset.list_runs()


def test_unknown_model_is_one_clear_error_and_nothing_is_written(tmp_path):
    dataset = _dataset("unknown-model", _jpegs(tmp_path, 1))
    with pytest.raises(ModelLoadError, match="Could not load CLIP weights 'someone/clip-that-is-not-here'"):
        fz.detect(dataset, PROMPTS, model="someone/clip-that-is-not-here", progress=False)
    assert not dataset.has_field("clip_detections")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_requested_without_a_gpu_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="no usable CUDA GPU; use device='cpu'"):
        load_model("shapes-world", device="cuda")


# --- fields ---------------------------------------------------------------------------------------

def test_patches_view_is_refused(shapes_model, tmp_path):
    dataset = _dataset("patches", _jpegs(tmp_path, 1))
    dataset.set_values("gt", [fo.Detections(detections=[fo.Detection(label="x", bounding_box=[0, 0, .5, .5])])])
    with pytest.raises(LabelingError, match="cannot write labels on a patches"):
        fz.detect(dataset.to_patches("gt"), PROMPTS, model=shapes_model, progress=False)


def test_an_empty_target_is_refused(shapes_model, tmp_path):
    dataset = _dataset("empty-target", _jpegs(tmp_path, 1))
    with pytest.raises(LabelingError, match="the target has no samples"):
        fz.detect(dataset.select([]), PROMPTS, model=shapes_model, label_field="clip", progress=False)
    assert not dataset.has_field("clip")


def test_heatmap_field_of_another_type_is_refused(shapes_model, tmp_path):
    dataset = _dataset("heatmap-clash", _jpegs(tmp_path, 1))
    dataset.set_values("clip_heatmap_red_circle", [fo.Classification(label="x")])
    with pytest.raises(LabelingError, match="'clip_heatmap_red_circle' already holds Classification"):
        fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", progress=False)
    assert not dataset.has_field("clip")


# --- runs -----------------------------------------------------------------------------------------

def test_failure_without_skip_raises_keeps_earlier_samples_and_skip_existing_finishes(shapes_model, tmp_path):
    paths = _jpegs(tmp_path, 4)
    _truncated(paths[2])
    dataset = _dataset("resume", paths)
    kwargs = dict(model=shapes_model, label_field="clip", **FAST)
    with pytest.raises(ImageLoadError, match="cannot read image"):
        fz.detect(dataset, PROMPTS, skip_failures=False, progress=False, **kwargs)
    assert [d is not None for d in dataset.values("clip")] == [True, True, False, False]
    before = dataset.values("clip")[:2]
    _scene(2).save(paths[2], quality=90)  # the user repairs the file
    seen = []
    fz.detect(dataset, PROMPTS, skip_existing=True, progress=lambda done, total: seen.append(total), **kwargs)
    assert seen == [2, 2] and all(d is not None for d in dataset.values("clip"))
    assert dataset.values("clip")[:2] == before


def test_ctrl_c_keeps_finished_samples_and_writes_nothing_partial(shapes_model, tmp_path):
    dataset = _dataset("interrupt", _jpegs(tmp_path, 5))

    def interrupt(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", heatmap_size=96, progress=interrupt, **FAST)
    fields = ["clip", "clip_heatmap_red_circle", "clip_heatmap_blue_square"]
    assert 2 <= _assert_whole_or_absent(dataset, fields) <= 3
    assert _maps_on_disk(dataset, "clip") == _maps_held(dataset, fields[1:])  # no map of an unsaved sample


def _maps_on_disk(dataset: fo.Dataset, label_field: str) -> set[Path]:
    return {p for p in Path(DetectRun.load(dataset, label_field).heatmap_dir).glob("*.png") if p.is_file()}


def _maps_held(dataset: fo.Dataset, fields: list[str]) -> set[Path]:
    return {Path(path) for field in fields for path in dataset.values(f"{field}.map_path") if path}


@pytest.mark.slow  # a subprocess killed mid-run
def test_killed_run_leaves_no_corrupt_label_and_resumes(shapes_model, tmp_path):
    """SIGKILL mid-run (a killed delegated op): every sample is whole or untouched; skip_existing finishes."""
    dataset = _dataset("killed", _jpegs(tmp_path, 10))
    dataset.persistent = True
    script = textwrap.dedent(f"""
        import fiftyone as fo, fiftyone_clip_zeroshot as fz
        fz.detect(fo.load_dataset("killed"), {PROMPTS!r}, model="shapes-world", device="cpu", label_field="clip",
                  heatmap_size=96, progress=lambda done, total: print("done", done, flush=True), **{FAST!r})
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.strip() == "done 6":
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait()
    assert process.returncode == -signal.SIGKILL
    dataset.reload()
    fields = ["clip", "clip_heatmap_red_circle", "clip_heatmap_blue_square"]
    labelled = _assert_whole_or_absent(dataset, fields)
    assert labelled < 10
    seen = []
    fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", heatmap_size=96, skip_existing=True,
              progress=lambda done, total: seen.append(total), **FAST)
    assert seen[-1] == 10 - labelled and _assert_whole_or_absent(dataset, fields) == 10
    dataset.delete()


def test_heatmap_png_that_cannot_be_written_fails_that_sample_only(shapes_model, tmp_path):
    dataset = _dataset("unwritable", _jpegs(tmp_path, 3))
    job = DetectJob(dataset, PROMPTS, model=shapes_model, label_field="clip", heatmap_size=96,
                    heatmap_root=tmp_path / "maps", **FAST)
    blocked = dataset.first()
    (job.heatmap_dir / f"{blocked.id}-clip_heatmap_blue_square.png").mkdir(parents=True)  # e.g. a full disk
    run_job(job, progress=False)
    assert list(job.failures) == [blocked.id] and "IsADirectoryError" in job.failures[blocked.id]
    fields = ["clip", "clip_heatmap_red_circle", "clip_heatmap_blue_square"]
    assert _assert_whole_or_absent(dataset, fields) == 2 and dataset.first()["clip"] is None
    assert not (job.heatmap_dir / f"{blocked.id}-clip_heatmap_red_circle.png").exists()  # its first map went too
    assert _maps_on_disk(dataset, "clip") == _maps_held(dataset, fields[1:])


def test_a_second_run_on_a_field_being_written_is_refused_naming_the_first(shapes_model, tmp_path):
    dataset = _dataset("busy", _jpegs(tmp_path, 3))
    first = DetectJob(dataset, PROMPTS, model=shapes_model, label_field="clip", heatmaps=False, **FAST)
    steps = first.steps()
    next(steps)  # the first run is under way
    assert str(fz.run_status(dataset, "clip")) == f"run {first.run_id} on 'clip': running"
    with pytest.raises(LabelingError, match=f"'clip' is being written by run {first.run_id} .*pid {os.getpid()}"):
        fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", progress=False, **FAST)
    fz.detect(dataset, PROMPTS, model=shapes_model, label_field="other", heatmaps=False, progress=False, **FAST)
    list(steps)
    assert fz.run_status(dataset, "clip").state == "done"
    fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", heatmaps=False, progress=False, **FAST)


def test_a_run_whose_process_died_does_not_hold_its_field(shapes_model, tmp_path, caplog):
    dataset = _dataset("orphan", _jpegs(tmp_path, 2))
    fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", heatmaps=False, progress=False, **FAST)
    run = DetectRun.load(dataset, "clip")
    key = claim_store.claim_key(dataset.name, "clip")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run.update(dataset, state="running")  # as a killed process leaves it
    assert claim_store.insert(key, run.run_id, f"{socket.gethostname()} pid {dead.stdout.strip()}") is None
    assert fz.run_status(dataset, "clip").state == "lost"
    fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", heatmaps=False, progress=False, **FAST)
    assert f"took over the claim of run {run.run_id} (its process" in caplog.text
    assert claim_store.read(key) is None  # released at the end
    run = DetectRun.load(dataset, "clip")
    run.update(dataset, state="running")
    assert claim_store.insert(key, run.run_id, "another-machine pid 1") is None
    assert fz.run_status(dataset, "clip").state == "running"  # another machine's process: its heartbeat decides
    with pytest.raises(LabelingError, match="without a heartbeat for 60 s, is taken over"):
        fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", heatmaps=False, progress=False, **FAST)
    old = claim_store.now() - timedelta(seconds=claim_store.STALE_AFTER + 1)
    claim_store._collection().update_one({"_id": key}, {"$set": {"heartbeat": old}})
    assert fz.run_status(dataset, "clip").state == "lost"
    fz.detect(dataset, PROMPTS, model=shapes_model, label_field="clip", heatmaps=False, progress=False, **FAST)
    assert "no heartbeat for 61 s (limit 60 s)" in caplog.text


RACE = """
import json, sys, fiftyone as fo, fiftyone_clip_zeroshot as fz
model = fz.load_model("shapes-world", device="cpu")
dataset = fo.load_dataset("race")
print("ready", flush=True)
sys.stdin.readline()  # every process waits here for the same go
try:
    fz.detect(dataset, {prompts}, model=model, label_field="clip", progress=False, **{fast})
    print(json.dumps(dict(ran=True)))
except fz.LabelingError as error:
    print(json.dumps(dict(ran=False, error=str(error))))
"""


@pytest.mark.slow  # six processes
def test_six_runs_started_at_one_instant_on_one_field_one_runs_five_are_refused(tmp_path):
    dataset = _dataset("race", _jpegs(tmp_path, 4))
    dataset.persistent = True
    script = RACE.format(prompts=PROMPTS, fast=FAST)
    runs = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(6)]
    try:
        assert all(run.stdout.readline().strip() == "ready" for run in runs)
        for run in runs:  # all six are past their imports and model load: release them together
            run.stdin.write("go\n")
        for run in runs:
            run.stdin.flush()
        outcomes = [json.loads(run.communicate(timeout=300)[0].strip().splitlines()[-1]) for run in runs]
    finally:
        for run in runs:
            run.kill()
    dataset.reload()
    winner = DetectRun.load(dataset, "clip")
    assert sum(o["ran"] for o in outcomes) == 1, outcomes
    assert all(f"'clip' is being written by run {winner.run_id}" in o["error"] for o in outcomes if not o["ran"])
    assert winner.state == "done" and dataset.count("clip") == 4
    maps = {Path(p).parent for p in dataset.values("clip_heatmap_red_circle.map_path")}
    assert maps == {Path(winner.heatmap_dir)}  # every sample labelled by the one run
    assert claim_store.read(claim_store.claim_key("race", "clip")) is None
    dataset.delete()


def test_out_of_memory_halves_the_batch_and_gives_the_same_result(shapes_model, monkeypatch):
    image = np.asarray(_scene(1))
    expected = fz.localize(image, PROMPTS, shapes_model, cache=False, **FAST)  # both runs encode every crop
    model = dataclasses.replace(shapes_model, batch_size=64)
    encode = model.model.get_image_features

    def small_gpu(pixel_values, **kwargs):
        if len(pixel_values) > 16:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return encode(pixel_values=pixel_values, **kwargs)

    monkeypatch.setattr(model.model, "get_image_features", small_gpu)
    results = fz.localize(image, PROMPTS, model, cache=False, **FAST)
    assert model.max_batch == 16
    for got, want in zip(results, expected):
        assert np.allclose(got.heatmap, want.heatmap, atol=1e-5)
        assert np.allclose(got.detections.xyxy, want.detections.xyxy, atol=1e-3)


def test_every_deliberate_error_shares_one_base():
    for error in (OptionsError, ModelLoadError, ImageLoadError, LabelingError):
        assert issubclass(error, fz.ClipZeroShotError)
    with pytest.raises(fz.ClipZeroShotError, match="window_stride"):
        fz.LocalizeOptions.create(window_stride=0)
