"""``localize`` over a video's frames: every ``frame_step``-th frame of a range, decoded in-process
(``frames``) and localized a few frames at a time, their crops encoded as one stream of batches.

Each frame is an image to the localizers and to the embedding store, which keys it by its pixels:
a rerun with new prompts reads the frames' crops back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fiftyone_clip_zeroshot.core.localize import Localization, localize_batch
from fiftyone_clip_zeroshot.core.models.model import ClipModel
from fiftyone_clip_zeroshot.core.options import LocalizeOptions, check_prompts
from fiftyone_clip_zeroshot.core.video.frames import frame_numbers, read_frames, video_info

FRAMES_AT_ONCE = 4  # frames whose crops are encoded together (localize_batch)


def localize_video(
    video: str | Path,
    prompts: str | Sequence[str],
    model: ClipModel,
    method: str = "sliding_window",
    frame_step: int = 1,
    first: int = 1,
    last: int | None = None,
    **options: Any,
) -> Iterator[tuple[int, list[Localization]]]:
    """Localize each prompt in every ``frame_step``-th frame of a video, in frame order.

    Args:
        video: the video file's path (any container and codec PyAV decodes: H.264, VP9, MPEG-4...).
        prompts: one prompt or a list, e.g. ``["a red circle", "a butterfly"]``.
        model: a ``ClipModel`` from ``load_model``.
        method: as for ``localize``.
        frame_step: every Nth frame, from ``first``.
        first, last: the frame range, numbered from 1 as FiftyOne numbers frames (default: all).
        **options: ``LocalizeOptions`` fields, as for ``localize``.

    Yields ``(frame number, one Localization per prompt)``; a frame that fails raises its error.
    """
    prompts = check_prompts(prompts)
    opts = LocalizeOptions.create(method=method, **options)
    numbers = frame_numbers(video_info(video).frame_count, frame_step, first, last)
    batch: list[tuple[int, Any]] = []
    for number, pixels in read_frames(video, numbers):
        batch.append((number, pixels.to(model.device)))
        if len(batch) == FRAMES_AT_ONCE:
            yield from _localized(batch, prompts, model, opts)
            batch = []
    yield from _localized(batch, prompts, model, opts)


def _localized(batch: list[tuple[int, Any]], prompts: list[str], model: ClipModel, opts: LocalizeOptions
               ) -> Iterator[tuple[int, list[Localization]]]:
    if not batch:
        return
    for (number, _), result in zip(batch, localize_batch([pixels for _, pixels in batch], prompts, model, opts)):
        if isinstance(result, Exception):
            raise result
        yield number, result
