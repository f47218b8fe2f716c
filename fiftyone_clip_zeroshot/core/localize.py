"""Sliding-window and occlusion localizers: one image in, a heatmap and detections per prompt out.

Scores are CLIP's zero-shot probabilities: a softmax, at CLIP's own logit scale, over the
requested prompts plus negative prompts (background, a generic object). A window's value for a
prompt is the probability that it shows that prompt rather than another requested prompt or
nothing in particular, so it means the same on every image for the same prompt set, and a
prompt whose object is absent loses to the negatives instead of being stretched to 1 by a
per-image min-max. Prompts compete: near-synonyms asked together share their probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import supervision as sv
import torch

from fiftyone_clip_zeroshot.core.boxes import fuse_windows, occlusion_boxes, with_context
from fiftyone_clip_zeroshot.core.images import ImageInput, load_image
from fiftyone_clip_zeroshot.core.model import ClipModel
from fiftyone_clip_zeroshot.core.options import LocalizeOptions, check_method, check_prompts
from fiftyone_clip_zeroshot.core.windows import WindowGrid, coverage_mean, crop_boxes, positions


@dataclass
class Localization:
    """Result for one prompt.

    ``heatmap``: float32 ``(h, w)`` in [0, 1], covering the whole image (``h/H == w/W`` up to
    rounding); ``detections``: ``sv.Detections`` in image pixels with ``class_id`` = prompt
    index and ``data["prompt"]``.
    """

    prompt: str
    heatmap: np.ndarray
    detections: sv.Detections


def localize(
    image: ImageInput,
    prompts: str | Sequence[str],
    model: ClipModel,
    method: str = "sliding_window",
    **options: Any,
) -> list[Localization]:
    """Localize each prompt in ``image``; one ``Localization`` per distinct prompt, in order.

    ``method`` is ``"sliding_window"`` (score windows at several scales, fuse the best ones into
    boxes) or ``"occlusion"`` (hide patches of context windows; where hiding drops the score
    most is the object). ``options`` are ``LocalizeOptions`` fields.
    """
    check_method(method)
    prompts = check_prompts(prompts)
    opts = LocalizeOptions.create(method, **options)
    pixels = load_image(image).to(model.device, non_blocking=True)
    return localize_tensor(pixels, prompts, model, method, opts)


def localize_tensor(
    pixels: torch.Tensor, prompts: list[str], model: ClipModel, method: str, opts: LocalizeOptions
) -> list[Localization]:
    """``localize`` for an already decoded uint8 ``(3, H, W)`` tensor on the model's device."""
    if opts.batch_size:
        model.batch_size = opts.batch_size
    scorer = PromptScorer(model, prompts, opts.negative_prompts)
    image_hw = (int(pixels.shape[1]), int(pixels.shape[2]))
    heat_hw = heatmap_shape(image_hw, opts.heatmap_size)
    if method == "sliding_window":
        scales = _score_windows(pixels, model, scorer, opts)
        heat = torch.stack([coverage_mean(window_centres(b), p, image_hw, heat_hw) for b, p in scales]).mean(0)
        boxes, probs = np.concatenate([b for b, _ in scales]), torch.cat([p for _, p in scales])
        detections = [fuse_windows(boxes, probs[:, p].cpu().numpy(), p, prompt, opts) for p, prompt in enumerate(prompts)]
    else:
        boxes, drops, context_boxes, base = _occlude(pixels, model, scorer, opts)
        heat = coverage_mean(boxes.reshape(-1, 4), drops.reshape(-1, len(prompts)), image_hw, heat_hw)
        detections = [
            occlusion_boxes(context_boxes, base[:, p].cpu().numpy(), boxes, drops[..., p].cpu().numpy(), p, prompt, opts)
            for p, prompt in enumerate(prompts)
        ]
    if opts.verify_margins:
        detections = _verify(pixels, model, scorer, detections, opts)
    heat = heat.clamp(0, 1).cpu().numpy().astype(np.float32)
    return [Localization(prompt, heat[p], detections[p]) for p, prompt in enumerate(prompts)]


def _verify(pixels: torch.Tensor, model: ClipModel, scorer: PromptScorer, detections: list[sv.Detections],
            opts: LocalizeOptions) -> list[sv.Detections]:
    """Score every candidate once more on square crops that frame it with some context (the view
    CLIP knows best), averaged over ``verify_margins``; the confidence becomes the geometric mean
    of that and the candidate's own score, and boxes below ``confidence_thresh`` go. This removes
    boxes on fragments of other objects and on windows that straddle several objects."""
    merged = sv.Detections.merge(detections)
    if len(merged) == 0:
        return detections
    probs = scorer(embed_in_context(pixels, merged.xyxy, opts.verify_margins, model)).cpu().numpy()
    mine = probs.reshape(len(opts.verify_margins), len(merged), -1)[:, np.arange(len(merged)), merged.class_id]
    merged.confidence = np.sqrt(merged.confidence * mine.mean(0)).astype(np.float32)
    merged = merged[merged.confidence >= opts.confidence_thresh]
    return [merged[merged.class_id == p] for p in range(len(detections))]


def embed_in_context(pixels: torch.Tensor, xyxy: np.ndarray, margins: Sequence[float], model: ClipModel) -> torch.Tensor:
    """Embeddings ``(len(margins) * N, D)`` of square crops framing each xyxy box with each
    margin (margin-major), cut and encoded batch by batch on the model's device."""
    image_hw = tuple(pixels.shape[1:])
    context = np.concatenate([with_context(xyxy, margin, image_hw) for margin in margins])
    return model.encode_batches(len(context), lambda idx: crop_boxes(pixels, context[idx], model.image_size))


def window_centres(boxes: np.ndarray, keep: float = 0.5) -> np.ndarray:
    """The middle ``keep`` of each window. A window that shows an object shows it around its
    centre, so crediting only the centre keeps heatmaps from smearing a window's score over its
    background (a strip along the image border, where no window is centred, stays at 0)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * keep / 2
    return np.concatenate([centre - half, centre + half], 1)


def heatmap_shape(image_hw: tuple[int, int], longest: int) -> tuple[int, int]:
    """Heatmap grid with the image's aspect ratio and at most ``longest`` cells on its long side."""
    scale = min(1.0, longest / max(image_hw))
    return max(1, round(image_hw[0] * scale)), max(1, round(image_hw[1] * scale))


class PromptScorer:
    """Turns image embeddings into per-prompt probabilities (softmax over prompts + negatives)."""

    def __init__(self, model: ClipModel, prompts: list[str], negatives: Sequence[str]):
        self.scale = model.logit_scale
        self.count = len(prompts)
        self.text = model.encode_text([*prompts, *(n for n in negatives if n not in prompts)])

    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` unit embeddings → ``(N, P)`` probabilities in [0, 1]."""
        return torch.softmax(self.scale * embeddings @ self.text.T, dim=1)[:, : self.count]


MIN_WINDOW_PX = 16  # smaller windows show CLIP nothing; this also bounds the work on thin strips


def _window_grids(image_hw: tuple[int, int], scales: Sequence[float], stride: float, size: int) -> list[WindowGrid]:
    """Square windows of ``scale`` × the shorter side (at least ``MIN_WINDOW_PX``, clipped to the image)."""
    short = min(image_hw)
    sides = dict.fromkeys(max(MIN_WINDOW_PX, s * short) for s in scales)  # small images: scales may coincide
    return [WindowGrid.build(image_hw, side, side * stride, size) for side in sides]


def _score_windows(
    pixels: torch.Tensor, model: ClipModel, scorer: PromptScorer, opts: LocalizeOptions
) -> list[tuple[np.ndarray, torch.Tensor]]:
    """Per scale: window boxes ``(N, 4)`` (numpy, image px) and their probabilities ``(N, P)``."""
    scales = []
    for grid in _window_grids(tuple(pixels.shape[1:]), opts.window_scales, opts.window_stride, model.image_size):
        resized = grid.resize(pixels)
        embeddings = model.encode_batches(len(grid), lambda idx: grid.crops(resized, idx))
        scales.append((grid.boxes, scorer(embeddings)))
    return scales


def _occluder_masks(size: int, opts: LocalizeOptions, device: torch.device) -> tuple[torch.Tensor, np.ndarray]:
    """``(K, 1, S, S)`` keep-masks (0 where hidden) and their ``(K, 4)`` boxes in input pixels."""
    side = max(1, round(opts.occluder_size * size))
    starts = positions(size, side, max(1, round(side * opts.occluder_stride)))
    yy, xx = np.meshgrid(starts, starts, indexing="ij")
    boxes = np.stack([xx.ravel(), yy.ravel(), xx.ravel() + side, yy.ravel() + side], 1)
    masks = torch.ones(len(boxes), 1, size, size, device=device)
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        masks[k, :, y1:y2, x1:x2] = 0
    return masks, boxes.astype(np.float64)


def _fill_value(model: ClipModel, fill: str, device: torch.device) -> torch.Tensor:
    rgb = {"mean": [255 * m for m in model.image_mean], "black": [0.0] * 3, "gray": [127.5] * 3}[fill]
    return torch.tensor(rgb, device=device).view(1, 3, 1, 1)


def _occlude(pixels: torch.Tensor, model: ClipModel, scorer: PromptScorer, opts: LocalizeOptions):
    """Occlusion over context windows.

    Only contexts where some prompt reaches half the confidence threshold are occluded (a drop
    can never exceed the context's own probability); the others count as no drop. Returns
    occluder boxes ``(C, K, 4)`` in image px, probability drops ``(C, K, P)`` (clamped at 0),
    context boxes ``(C, 4)`` and context probabilities ``(C, P)``.
    """
    size = model.image_size
    keep, occluders = _occluder_masks(size, opts, pixels.device)
    fill = _fill_value(model, opts.occluder_fill, pixels.device)
    count = len(keep)
    all_boxes, all_drops, all_contexts, all_base = [], [], [], []
    for grid in _window_grids(tuple(pixels.shape[1:]), opts.context_scales, opts.context_stride, size):
        resized = grid.resize(pixels)
        base = scorer(model.encode_batches(len(grid), lambda idx, grid=grid, resized=resized: grid.crops(resized, idx)))
        active = torch.nonzero(base.max(1).values >= opts.confidence_thresh / 2).flatten().cpu().numpy()

        def occluded(idx: slice, grid=grid, resized=resized, active=active) -> torch.Tensor:
            flat = np.arange(idx.start, idx.stop)
            crops = grid.crops(resized, active[flat // count])
            mask = keep[flat % count]
            return crops * mask + fill * (1 - mask)

        drops = torch.zeros(len(grid), count, base.shape[1], device=base.device)
        if len(active):
            hidden = scorer(model.encode_batches(len(active) * count, occluded)).view(len(active), count, -1)
            drops[active] = (base[active][:, None, :] - hidden).clamp(min=0)
        contexts = grid.boxes
        scale = (contexts[:, 2:] - contexts[:, :2]) / size
        all_boxes.append(np.tile(contexts[:, None, :2], (1, 1, 2)) + occluders[None] * np.tile(scale, 2)[:, None, :])
        all_drops.append(drops)
        all_contexts.append(contexts)
        all_base.append(base)
    return np.concatenate(all_boxes), torch.cat(all_drops), np.concatenate(all_contexts), torch.cat(all_base)
