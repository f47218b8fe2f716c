"""``localize``: one image in, a heatmap and detections per prompt out, by any registered localizer.

Scores are the model's zero-shot probabilities, in its family's meaning (``core.models.families``).
For CLIP, a softmax at its own logit scale over the requested prompts plus negative prompts
(background, a generic object): a window's value for a prompt is the probability that it shows
that prompt rather than another requested prompt or nothing in particular, and prompts compete
(near-synonyms asked together share their probability). For SigLIP, each prompt's own sigmoid
probability. Either way a value means the same on every image, and a prompt whose object is
absent scores low instead of being stretched to 1 by a per-image min-max.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import supervision as sv
import torch

from fiftyone_clip_zeroshot.core.embedding_store import Counts, open_store
from fiftyone_clip_zeroshot.core.geometry.images import ImageInput, load_image
from fiftyone_clip_zeroshot.core.geometry.regions import candidate_boxes
from fiftyone_clip_zeroshot.core.localizers import LOCALIZERS
from fiftyone_clip_zeroshot.core.localizers.detections import detect_objects
from fiftyone_clip_zeroshot.core.models.batching import SharedEncoder
from fiftyone_clip_zeroshot.core.models.model import ClipModel
from fiftyone_clip_zeroshot.core.models.prompt_templates import resolve_templates
from fiftyone_clip_zeroshot.core.options import LocalizeOptions, check_prompts
from fiftyone_clip_zeroshot.core.scoring import PromptScorer
from fiftyone_clip_zeroshot.core.stopwatch import stage


@dataclass
class Localization:
    """Result for one prompt.

    ``heatmap``: float32 ``(h, w)`` in [0, 1], covering the whole image (``h/H == w/W`` up to
    rounding); ``detections``: ``sv.Detections`` in image pixels with ``class_id`` = prompt
    index and ``data["prompt"]``; ``over_cap``: how many more boxes passed every test than
    ``max_detections`` let through (0: none was cut); ``candidates``: the image's ``(N, 4)`` xyxy
    class-agnostic candidate boxes, the same array for every prompt (``propose``'s, with proposals);
    ``crops``: how many of the image's crops came from the embedding store and how many were
    encoded (the same for every prompt of the image).
    """

    prompt: str
    heatmap: np.ndarray
    detections: sv.Detections
    over_cap: int = 0
    candidates: np.ndarray | None = None
    crops: Counts = field(default_factory=Counts)


def localize(
    image: ImageInput,
    prompts: str | Sequence[str],
    model: ClipModel,
    method: str = "sliding_window",
    **options: Any,
) -> list[Localization]:
    """Localize each prompt in ``image``; one ``Localization`` per distinct prompt, in order.

    Args:
        image: a path, PIL image, numpy ``(H, W[, C])`` array or ``(3, H, W)`` tensor.
        prompts: one prompt or a list, e.g. ``["a red circle", "a butterfly"]``.
        model: a ``ClipModel`` from ``load_model``.
        method: ``"sliding_window"`` (windows at several scales give the heatmap and decide
            which prompt a box may take), ``"occlusion"`` (hide patches of context windows; where
            hiding drops the score most is the object), ``"proposals"`` (class-agnostic regions
            read by CLIP as crops) or ``"dense"`` (CLIP's patch tokens, one forward per tile,
            give the map). Boxes are region proposals unless ``proposals=False``.
        **options: ``LocalizeOptions`` fields (``confidence_thresh``, ``batch_size``, ...);
            ``cache=False`` encodes every crop, without the embedding store; ``prompt_templates``
            reads each prompt through templates (a set's name, ``"photo"``, or ``"{}"`` strings).
    """
    prompts = check_prompts(prompts)
    opts = LocalizeOptions.create(method=method, **options)
    pixels = load_image(image).to(model.device, non_blocking=True)
    return localize_tensor(pixels, prompts, model, opts)


def propose(image: ImageInput, **options: Any) -> np.ndarray:
    """The class-agnostic candidate boxes every method reads, ``(N, 4)`` float64 xyxy in image px,
    before any prompt is seen: the region proposals at these options (``core.geometry.regions``).

    Args:
        image: a path, PIL image, numpy ``(H, W[, C])`` array or ``(3, H, W)`` tensor.
        **options: ``LocalizeOptions`` fields; the proposal ones count (``proposal_tile``,
            ``proposal_side``, ``proposal_scales``; ``fz.SMALL_OBJECTS`` for crowds of small objects).
    """
    return candidate_boxes(load_image(image), LocalizeOptions.create(**options))


def localize_tensor(
    pixels: torch.Tensor, prompts: list[str], model: ClipModel, opts: LocalizeOptions
) -> list[Localization]:
    """``localize`` for an already decoded uint8 ``(3, H, W)`` tensor on the model's device."""
    opts = opts.for_model(model)
    return _localize(pixels, _scorer(model, prompts, opts), prompts, opts)


def localize_batch(
    images: Sequence[torch.Tensor], prompts: list[str], model: ClipModel, opts: LocalizeOptions
) -> list[list[Localization] | Exception]:
    """``localize_tensor`` for several decoded images at once, their windows, crops and tiles
    encoded as one stream of batches (``core.models.batching``); each image's results are its own
    single-image results, or the exception that stopped that image (the others go on)."""
    opts = opts.for_model(model)
    scorer = _scorer(model, prompts, opts)
    if len(images) == 1:
        try:
            return [_localize(images[0], scorer, prompts, opts)]
        except Exception as error:  # noqa: BLE001 - returned in the image's place, as for several
            return [error]
    shared = scorer.with_encoder(SharedEncoder(model, opts.batch_size))
    return shared.shared.map(lambda pixels: _localize(pixels, shared, prompts, opts), images)


def _scorer(model: ClipModel, prompts: list[str], opts: LocalizeOptions) -> PromptScorer:
    return PromptScorer(model, prompts, opts.negative_prompts, opts.batch_size, open_store(opts.cache),
                        resolve_templates(opts.prompt_templates))


def _localize(pixels: torch.Tensor, scorer: PromptScorer, prompts: list[str], opts: LocalizeOptions
              ) -> list[Localization]:
    with stage("maps and boxes"):  # its own time: the encoder, store and scoring count apart
        heat_hw = heatmap_shape((int(pixels.shape[1]), int(pixels.shape[2])), opts.heatmap_size)
        scorer = scorer.for_image(pixels)
        evidence = LOCALIZERS[opts.method](pixels, scorer, opts, heat_hw)
        detections = detect_objects(pixels, evidence, scorer, prompts, opts)
        scorer.flush()
        heat = evidence.heatmap.clamp(0, 1).cpu().numpy().astype(np.float32)
    return [Localization(prompt, heat[p], *detections[p], evidence.boxes, scorer.counts)
            for p, prompt in enumerate(prompts)]


def heatmap_shape(image_hw: tuple[int, int], longest: int) -> tuple[int, int]:
    """Heatmap grid with the image's aspect ratio and at most ``longest`` cells on its long side."""
    scale = min(1.0, longest / max(image_hw))
    return max(1, round(image_hw[0] * scale)), max(1, round(image_hw[1] * scale))
