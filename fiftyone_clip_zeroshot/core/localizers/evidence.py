"""The one result type of every localizer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

SUPPORT_GATE = 0.5  # a box can take a prompt only where the localizer's own support reaches this x the threshold


@dataclass
class Evidence:
    """What a localizer saw in one image.

    ``heatmap``: float ``(P, h, w)`` in [0, 1] on the heatmap grid, one map per prompt (what is
    stored); ``boxes``: ``(N, 4)`` xyxy candidate boxes in image px, class-agnostic (region
    proposals, or the localizer's own boxes with ``proposals=False``); ``probs``: their ``(N, P)``
    crop probabilities at ``opts.verify_margins``, where the localizer already has them;
    ``support_map``: a probability-scale ``(P, h, w)`` map that gates which prompt a box may take
    (default: the heatmap); ``box_support``: the support map's maximum in each box ``(N, P)``
    (``box_support``), where the localizer already has it; ``frame_map``: the ``(P, h, w)`` map
    boxes are framed against (``core.geometry.framing``; default: the heatmap): the candidates' own
    map where a localizer sharpened its heatmap with it, since some models' own maps (dense patch
    tokens that know little) would draw the frames astray.
    """

    heatmap: torch.Tensor
    boxes: np.ndarray
    probs: torch.Tensor | None = None
    support_map: torch.Tensor | None = None
    box_support: torch.Tensor | None = None
    frame_map: torch.Tensor | None = None

    @property
    def support(self) -> torch.Tensor:
        return self.heatmap if self.support_map is None else self.support_map

    @property
    def framing(self) -> torch.Tensor:
        return self.heatmap if self.frame_map is None else self.frame_map
