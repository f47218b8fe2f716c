"""Shapes videos: the shapes world in motion, with ground truth per frame and per object.

Each object keeps its class, size, colour and identity; it moves at a constant velocity and turns
at a constant rate, so it may enter the frame late or leave it early. Frame ``n``'s truth holds the
visible box (clipped to the frame), class and identity of every object at least partly in view.
Backgrounds are the world's muted, cluttered ones (``background="flat"``) or a crop of a photo
(``"photo"``). ``write_video`` encodes frames in-process with PyAV (H.264, which Chromium plays).
Every video is a pure function of ``(seed, index)``: generate them, never commit them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from PIL import Image, ImageDraw

from fiftyone_clip_zeroshot.shapes.world import CLASSES, COLORS, add_clutter, muted_background, polygon

VIDEO_STREAM = 6  # the rng stream of videos (the world's crops and scenes use streams 0 to 5)


@dataclass(frozen=True)
class FrameTruth:
    """One frame's objects in view: ``boxes`` ``(N, 4)`` xyxy px, ``labels`` and ``ids`` (stable across frames)."""

    boxes: np.ndarray
    labels: list[str]
    ids: list[int]


@dataclass(frozen=True)
class ShapesVideo:
    """A rendered video: its RGB ``frames`` and each frame's ``truth``, frame 1 first."""

    frames: list[Image.Image]
    truth: list[FrameTruth]


def render_video(seed: int, index: int, frame_count: int = 24, width: int = 320, height: int = 240,
                 max_objects: int = 3, background: str = "flat", photos: list[Image.Image] | None = None
                 ) -> ShapesVideo:
    """``frame_count`` frames of 1..``max_objects`` moving shapes on a ``background`` ("flat", or
    "photo": a crop of one of ``photos``)."""
    rng = np.random.default_rng([seed, VIDEO_STREAM, index])
    if background == "photo":
        if not photos:
            raise ValueError("a photo background needs photos")
        photo = photos[int(rng.integers(len(photos)))]
        fit = max(width / photo.width, height / photo.height)
        base = photo.resize((math.ceil(photo.width * fit), math.ceil(photo.height * fit))).crop((0, 0, width, height))
        base = base.convert("RGB")
    elif background == "flat":
        base = muted_background(rng, width, height)
        add_clutter(rng, base, int(rng.integers(5, 20)))
    else:
        raise ValueError(f"unknown background {background!r}; expected 'flat' or 'photo'")
    objects = [_moving_object(rng, width, height, frame_count) for _ in range(int(rng.integers(1, max_objects + 1)))]
    frames, truth = [], []
    for t in range(frame_count):
        image = base.copy()
        draw = ImageDraw.Draw(image)
        boxes, labels, ids = [], [], []
        for object_id, mover in enumerate(objects, start=1):
            colour, shape = mover.label.split(" ")
            cx, cy = mover.start + mover.velocity * t
            points = np.array(polygon(shape, cx, cy, mover.size, mover.angle + mover.turn * t))
            draw.polygon([tuple(p) for p in points], fill=COLORS[colour])
            low, high = np.clip(points.min(0), 0, [width, height]), np.clip(points.max(0), 0, [width, height])
            if (high - low).min() >= 2:  # at least a sliver in view
                boxes.append(np.r_[low, high])
                labels.append(mover.label)
                ids.append(object_id)
        frames.append(image)
        truth.append(FrameTruth(np.array(boxes, np.float32).reshape(-1, 4), labels, ids))
    return ShapesVideo(frames, truth)


class _Mover(NamedTuple):
    """One object of a video: its class, size, centre at frame 1, velocity (px per frame), angle and
    turn (rad per frame)."""

    label: str
    size: float
    start: np.ndarray
    velocity: np.ndarray
    angle: float
    turn: float


def _moving_object(rng: np.random.Generator, width: int, height: int, frame_count: int) -> _Mover:
    """An object that crosses up to the frame's shorter side during the video, so some enter or leave it."""
    label = CLASSES[int(rng.integers(len(CLASSES)))]
    size = float(rng.uniform(0.15, 0.35) * min(width, height))
    start = np.array([rng.uniform(0, width), rng.uniform(0, height)])
    speed = rng.uniform(0.2, 1.0) * min(width, height) / max(frame_count, 1)
    heading = rng.uniform(0, 2 * math.pi)
    velocity = speed * np.array([math.cos(heading), math.sin(heading)])
    angle, turn = rng.uniform(0, 2 * math.pi), rng.uniform(-0.05, 0.05)
    return _Mover(label, size, start, velocity, angle, turn)


def write_video(path: str | Path, frames: list[Image.Image], frame_rate: int = 12, codec: str = "libx264") -> Path:
    """Encode ``frames`` (RGB, even sides) to ``path`` in-process: H.264 in yuv420p by default."""
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=Fraction(frame_rate))
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
