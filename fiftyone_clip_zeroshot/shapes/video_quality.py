"""Per-frame quality of the localizers on held-out shapes videos: every sampled frame scored as an
image (``core.quality``), every class prompted on every frame, so absent prompts count too."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from fiftyone_clip_zeroshot.core.models.model import ClipModel
from fiftyone_clip_zeroshot.core.quality import Quality, QualityMeter
from fiftyone_clip_zeroshot.core.video.localize import localize_video
from fiftyone_clip_zeroshot.photos import background_images
from fiftyone_clip_zeroshot.shapes.video import FrameTruth, ShapesVideo, render_video, write_video
from fiftyone_clip_zeroshot.shapes.world import CLASSES

HELD_OUT_VIDEO_SEED = 10  # the world's held-out scene sets use seeds 7 to 9


def held_out_videos(count: int, folder: str | Path, background: str = "flat", frame_count: int = 24
                    ) -> list[tuple[Path, ShapesVideo]]:
    """The first ``count`` held-out 320x240 videos on a ``background`` ("flat" or "photo"), written
    as H.264 into ``folder``."""
    photos = background_images() if background == "photo" else None
    out = []
    for index in range(count):
        video = render_video(HELD_OUT_VIDEO_SEED, index, frame_count, background=background, photos=photos)
        out.append((write_video(Path(folder) / f"{background}-{index:03d}.mp4", video.frames), video))
    return out


def evaluate_videos(model: ClipModel, videos: list[tuple[Path, ShapesVideo]], method: str, frame_step: int = 1,
                    **options: Any) -> tuple[Quality, float]:
    """``localize_video`` with every class as a prompt on every ``frame_step``-th frame, scored per
    frame, and the crops it encoded per frame."""
    meter = QualityMeter(method)
    encoded = frames = 0
    for path, video in videos:
        start = time.perf_counter()
        for number, results in localize_video(path, list(CLASSES), model, method, frame_step, **options):
            seconds, start = time.perf_counter() - start, time.perf_counter()
            meter.add(results, frame_truth(video.truth[number - 1]), video.frames[0].size, seconds)
            encoded, frames = encoded + results[0].crops.computed, frames + 1
    return meter.result(), encoded / max(frames, 1)


def frame_truth(truth: FrameTruth) -> sv.Detections:
    """A frame's objects as ground truth: class ids in ``CLASSES`` order."""
    class_id = np.array([CLASSES.index(label) for label in truth.labels], int)
    return sv.Detections(xyxy=truth.boxes.reshape(-1, 4), class_id=class_id)
