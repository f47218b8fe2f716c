"""The candidate reader every method shares: class-agnostic region proposals, each read by CLIP
as a square context crop, once for all prompts.

The proposals (``core.geometry.regions``) need no weights; each prompt reads its ``max_candidates`` best.
Alone (the proposals method), that is every proposal up to the cap, and past it the best by their
mean on a cheap patch-token map (``rank_map``): a photo has hundreds of segments. The map is the
mean probability of the proposals covering each cell, each crediting only its central half (an
unread one counts with its ranking value). The other localizers pass their own map as
``support``: only the proposals it supports are read (``supported``), since a box outside every
prompt's support could never take a prompt (``SUPPORT_GATE``), and they sharpen their own
heatmaps with the reading's map (``sharpen``). With ``embed_all_candidates`` and an embedding
store, every proposal is encoded once, so that later prompts, whatever they pick, encode nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
import torch

from fiftyone_clip_zeroshot.core.geometry.regions import candidate_boxes, proposals_key
from fiftyone_clip_zeroshot.core.geometry.windows import box_mean, box_support, coverage_mean, window_centres
from fiftyone_clip_zeroshot.core.localizers.evidence import SUPPORT_GATE, Evidence
from fiftyone_clip_zeroshot.core.localizers.patch_tokens import dense_map

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.options import LocalizeOptions
    from fiftyone_clip_zeroshot.core.scoring import PromptScorer

CAP_AREA = 640 * 480  # max_candidates counts per this many pixels of image
RANK_TILE, RANK_STRIDE = 0.5, 0.5  # rank_map's tiles (x the shorter side) and step: 15 tiles on 640x480
TIE = 1e-4  # support values this close count as equal at the cap (maps are sums of float rounding)


def read(pixels: torch.Tensor, scorer: PromptScorer, opts: LocalizeOptions, heat_hw: tuple[int, int],
             support: torch.Tensor | None = None) -> Evidence:
    """Evidence of the proposals. With ``support`` (another localizer's ``(P, h, w)`` map) only the
    ``supported`` ones are read; alone, past each prompt's cap, only the best by ``rank_map``. The
    others get probability 0 (they take no prompt) and count in the map with their support."""
    image_hw = (int(pixels.shape[1]), int(pixels.shape[2]))
    boxes = scorer.remember(proposals_key(opts), lambda: candidate_boxes(pixels, opts))
    margins = opts.verify_margins or (0.1,)
    every = None  # with embed_all_candidates: every box's probabilities, its crops now in the store
    if opts.embed_all_candidates and scorer.cache is not None:
        every = scorer.boxes(pixels, boxes, margins)
    supports = None  # the support map's maximum in each box: what detect_objects gates with too
    if support is not None:
        ranks = supports = box_support(support, boxes, image_hw).float()
        read = supported(ranks.cpu().numpy(), image_hw, opts)
    elif len(boxes) > candidate_cap(image_hw, opts):
        ranks = box_mean(rank_map(pixels, scorer, opts, heat_hw), boxes, image_hw)
        read = supported(ranks.cpu().numpy(), image_hw, opts, gate=False)
    else:
        probs = scorer.boxes(pixels, boxes, margins) if every is None else every
        return Evidence(coverage_mean(window_centres(boxes), probs, image_hw, heat_hw), boxes,
                        probs if opts.verify_margins else None)
    index = torch.as_tensor(read, device=ranks.device)
    probs = torch.zeros_like(ranks)
    probs[index] = (scorer.boxes(pixels, boxes[read], margins) if every is None else every[index]).float()
    stand_in = ranks.clone()
    stand_in[index] = probs[index]
    heat = coverage_mean(window_centres(boxes), stand_in, image_hw, heat_hw)
    return Evidence(heat, boxes, probs if opts.verify_margins else None, box_support=supports)


def rank_map(
    pixels: torch.Tensor, scorer: PromptScorer, opts: LocalizeOptions, heat_hw: tuple[int, int]
) -> torch.Tensor:
    """A cheap ``(P, h, w)`` map to rank proposals by: the dense localizer's on ``RANK_TILE`` tiles."""
    coarse = replace(opts, dense_tile=RANK_TILE, dense_stride=RANK_STRIDE)
    return dense_map(pixels, scorer, coarse, heat_hw)


def candidate_cap(image_hw: tuple[int, int], opts: LocalizeOptions) -> int:
    """How many boxes each prompt reads: ``max_candidates`` per 640x480 of image."""
    return round(opts.max_candidates * max(1.0, image_hw[0] * image_hw[1] / CAP_AREA))


def supported(values: np.ndarray, image_hw: tuple[int, int], opts: LocalizeOptions, gate: bool = True) -> np.ndarray:
    """Indices of the boxes that some prompt reads: for each prompt, its ``max_candidates`` (per
    640x480 of image) boxes of highest support ``values`` ``(N, P)`` (``box_support``) among those
    reaching the gate, if ``gate`` (boxes within ``TIE`` of the last one are read too: many share their best
    cell, or a cell equal to it up to rounding, and which of equals came first must not decide, nor
    the order in which images' crops were batched); a box read for one prompt is scored for all."""
    cap = candidate_cap(image_hw, opts)
    gated = values >= SUPPORT_GATE * opts.confidence_thresh if gate else np.ones(values.shape, bool)
    if len(values) > cap:
        gated &= values >= -np.partition(-values, cap - 1, axis=0)[cap - 1] - TIE  # each prompt's cap-th best
    return np.flatnonzero(gated.any(1))


def sharpen(heatmap: torch.Tensor, support: torch.Tensor, proposed: Evidence) -> Evidence:
    """A localizer's own ``heatmap`` made to agree with the proposals' (their geometric mean), with
    the proposals as candidate boxes and ``support`` as the gate. Windows that hold an object
    off-centre, or a part of it, light up around it on a model that names parts like wholes; a
    segment's crop does not, so the product peaks on the object."""
    agreed = torch.sqrt(heatmap.clamp(min=0) * proposed.heatmap.clamp(min=0))
    return Evidence(agreed, proposed.boxes, proposed.probs, support_map=support, box_support=proposed.box_support,
                    frame_map=proposed.heatmap)
