"""A video's frames, decoded in-process with PyAV (installed with supervision): no ffmpeg or
ffprobe binary, which FiftyOne's own video metadata and frame sampling call.

Frames are numbered from 1, as FiftyOne numbers a video's frames. ``frame_numbers`` picks every
``frame_step``-th frame of an optional range, and ``read_frames`` decodes the video once, front to
back, handing over the picked frames as uint8 ``(3, H, W)`` tensors. A file that cannot be decoded,
a video without frames and a range outside the video raise ``VideoError``, naming the file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch

from fiftyone_clip_zeroshot.core.errors import ClipZeroShotError


class VideoError(ClipZeroShotError, ValueError):
    """A video that cannot be read, has no frames, or lacks the frames asked for."""


@dataclass(frozen=True)
class VideoInfo:
    """What a run needs of a video: its frame count (decoded, not the container's guess), frame
    rate, size and codec."""

    frame_count: int
    frame_rate: float
    width: int
    height: int
    codec: str


def video_info(path: str | Path) -> VideoInfo:
    """The ``VideoInfo`` of the video at ``path``; its frames are counted by demuxing (no decoding)."""
    with _opened(path) as container:
        stream = _video_stream(container, path)
        count = sum(1 for packet in container.demux(stream) if packet.size)
        rate, codec = float(stream.average_rate or stream.guessed_rate or 0), stream.codec_context
        info = VideoInfo(count, rate, codec.width, codec.height, codec.name)
    if info.frame_count == 0:
        raise VideoError(f"video {path} has no frames")
    return info


def frame_numbers(frame_count: int, frame_step: int = 1, first: int = 1, last: int | None = None) -> range:
    """Every ``frame_step``-th frame number from ``first`` to ``last`` (default: the last frame),
    numbered from 1; a range outside the video's ``frame_count`` frames raises ``VideoError``."""
    last = frame_count if last is None else last
    if frame_step < 1:
        raise VideoError(f"frame_step must be at least 1, not {frame_step}")
    if not 1 <= first <= last <= frame_count:
        raise VideoError(f"frames {first}..{last} are not within the video's frames 1..{frame_count}")
    return range(first, last + 1, frame_step)


def read_frames(path: str | Path, numbers: Sequence[int]) -> Iterator[tuple[int, torch.Tensor]]:
    """``(frame number, uint8 (3, H, W) tensor)`` of each of ``numbers`` (ascending, from 1), decoded
    front to back in one pass; a frame the file does not hold raises ``VideoError``."""
    wanted = iter(sorted(set(numbers)))
    target = next(wanted, None)
    if target is None:
        return
    with _opened(path) as container:
        try:
            for number, frame in enumerate(container.decode(_video_stream(container, path)), start=1):
                if number == target:
                    pixels = np.ascontiguousarray(frame.to_ndarray(format="rgb24"))
                    yield number, torch.from_numpy(pixels).permute(2, 0, 1)
                    target = next(wanted, None)
                    if target is None:
                        return
        except av.error.FFmpegError as error:
            raise VideoError(f"cannot decode frame {target} of video {path}: {error}") from None
    raise VideoError(f"video {path} ends before frame {target}")


def _opened(path: str | Path) -> av.container.InputContainer:
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise VideoError(f"cannot read video {path}: {error}") from None


def _video_stream(container: av.container.InputContainer, path: str | Path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        raise VideoError(f"{path} holds no video stream")
    return container.streams.video[0]
