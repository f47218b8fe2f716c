"""Videos decoded in-process (PyAV, no ffmpeg binary) and the generated shapes videos that measure them."""

import numpy as np
import pytest

from fiftyone_clip_zeroshot.core.video.frames import VideoError, frame_numbers, read_frames, video_info
from fiftyone_clip_zeroshot.core.video.localize import localize_video
from fiftyone_clip_zeroshot.shapes.video import render_video, write_video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    rendered = render_video(seed=0, index=1, frame_count=24)
    return rendered, write_video(tmp_path_factory.mktemp("videos") / "shapes.mp4", rendered.frames)


def test_a_written_video_reads_back_frame_by_frame(video):
    rendered, path = video
    info = video_info(path)
    assert (info.frame_count, info.frame_rate, info.width, info.height, info.codec) == (24, 12.0, 320, 240, "h264")
    numbers = frame_numbers(info.frame_count, frame_step=5)
    frames = dict(read_frames(path, numbers))
    assert list(frames) == [1, 6, 11, 16, 21]
    for number, pixels in frames.items():
        assert pixels.shape == (3, 240, 320) and pixels.dtype.is_floating_point is False
        expected = np.asarray(rendered.frames[number - 1]).transpose(2, 0, 1).astype(float)
        assert np.abs(pixels.numpy() - expected).mean() < 8  # H.264 is lossy; another frame differs by far more
    first = np.asarray(rendered.frames[0]).transpose(2, 0, 1).astype(float)
    assert np.abs(frames[21].numpy() - first).mean() > 2 * np.abs(frames[1].numpy() - first).mean()  # it moved


def test_frame_ranges_and_steps_are_checked_against_the_video():
    assert list(frame_numbers(12, 1, 10, 12)) == [10, 11, 12]
    assert list(frame_numbers(12, 4)) == [1, 5, 9]
    for step, first, last in ((1, 5, 20), (1, 0, 3), (1, 6, 5), (0, 1, None)):
        with pytest.raises(VideoError):
            frame_numbers(12, step, first, last)


def test_unreadable_and_frameless_videos_are_clear_errors(video, tmp_path):
    _, path = video
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(VideoError, match="cannot read video"):
        video_info(junk)
    with pytest.raises(VideoError, match="cannot read video"):
        video_info(tmp_path / "missing.mp4")
    frameless = write_video(tmp_path / "whole.mkv", render_video(0, 2, frame_count=12).frames)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(frameless.read_bytes()[: frameless.stat().st_size // 2])  # the header, no whole frame
    with pytest.raises(VideoError, match="has no frames"):
        video_info(cut)
    with pytest.raises(VideoError, match="ends before frame 25"):
        list(read_frames(path, [24, 25]))


def test_shapes_videos_are_seeded_and_objects_keep_their_identity():
    first, again = render_video(3, 0, frame_count=30), render_video(3, 0, frame_count=30)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first.frames, again.frames))
    labels = {}
    for truth in first.truth:
        assert len(truth.boxes) == len(truth.labels) == len(truth.ids)
        assert (truth.boxes[:, 2:] > truth.boxes[:, :2]).all() and (truth.boxes >= 0).all()
        for object_id, label in zip(truth.ids, truth.labels):
            assert labels.setdefault(object_id, label) == label  # an identity keeps its class
    videos = [render_video(3, index, frame_count=30) for index in range(10)]
    entering_or_leaving = [any(set(a.ids) != set(b.ids) for a, b in zip(v.truth, v.truth[1:])) for v in videos]
    assert 3 <= sum(entering_or_leaving) < 10  # objects enter and leave the view in some videos, not all


def test_localize_video_labels_the_sampled_frames_and_reruns_read_the_store(video, shapes_model, tmp_path):
    rendered, path = video
    options = dict(method="proposals", frame_step=10, cache=str(tmp_path / "store"), embed_all_candidates=True)
    first = dict(localize_video(path, ["red circle", "blue star"], shapes_model, **options))
    assert list(first) == [1, 11, 21]
    for results in first.values():
        assert [r.prompt for r in results] == ["red circle", "blue star"]
        boxes = np.concatenate([r.detections.xyxy for r in results])
        assert (boxes >= 0).all() and (boxes[:, 2] <= 320).all() and (boxes[:, 3] <= 240).all()
        assert results[0].crops.computed > 0  # a first run encodes its frames' crops
    again = dict(localize_video(path, rendered.truth[0].labels, shapes_model, **options))  # new prompts
    assert all(results[0].crops.computed == 0 and results[0].crops.stored > 0 for results in again.values())
    found = [r for results in again.values() for r in results if len(r.detections)]
    assert found, "no object of the first frame's classes found on any sampled frame"
