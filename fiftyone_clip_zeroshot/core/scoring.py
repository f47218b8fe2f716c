"""CLIP's zero-shot probabilities for prompts, and embeddings of boxes seen with some context."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from fiftyone_clip_zeroshot.core.boxes import with_context
from fiftyone_clip_zeroshot.core.model import ClipModel
from fiftyone_clip_zeroshot.core.windows import crop_boxes

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.batching import SharedEncoder


class PromptScorer:
    """Turns image embeddings into per-prompt probabilities: a softmax, at CLIP's own logit
    scale, over the prompts plus negative prompts, of which only the prompts' share is kept.

    ``batch_size`` is this run's crops per forward pass (``None``: the model's); it never changes the
    shared model. ``shared``: the ``SharedEncoder`` through which several images encode together
    (``with_encoder``); None: this scorer encodes by itself.
    """

    def __init__(self, model: ClipModel, prompts: Sequence[str], negatives: Sequence[str],
                 batch_size: int | None = None):
        self.model = model
        self.batch_size = batch_size
        self.scale = model.logit_scale
        self.count = len(prompts)
        self.text = model.encode_text([*prompts, *(n for n in negatives if n not in prompts)])
        self.shared: SharedEncoder | None = None

    def with_encoder(self, shared: SharedEncoder) -> PromptScorer:
        """This scorer, encoding through ``shared`` (texts are not encoded again)."""
        scorer = copy.copy(self)
        scorer.shared = shared
        return scorer

    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` unit embeddings → ``(N, P)`` probabilities in [0, 1]."""
        return torch.softmax(self.scale * embeddings @ self.text.T, dim=1)[:, : self.count]

    def encode(
        self,
        count: int,
        make_batch: Callable[[slice], torch.Tensor],
        encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``model.encode_batches`` at this run's batch size (through ``shared`` when set)."""
        if self.shared is not None:
            return self.shared.encode(count, make_batch, encode)
        return self.model.encode_batches(count, make_batch, self.batch_size, encode)

    def boxes(self, pixels: torch.Tensor, xyxy: np.ndarray, margins: Sequence[float]) -> torch.Tensor:
        """Probabilities ``(N, P)`` of xyxy boxes, averaged over square crops with each margin."""
        if len(xyxy) == 0:
            return torch.zeros(0, self.count, device=self.model.device)
        count, make_batch = context_crops(pixels, xyxy, margins, self.model.image_size)
        return self(self.encode(count, make_batch)).view(len(margins), len(xyxy), -1).mean(0)


def context_crops(pixels: torch.Tensor, xyxy: np.ndarray, margins: Sequence[float],
                  size: int) -> tuple[int, Callable[[slice], torch.Tensor]]:
    """How many square crops frame each xyxy box with each margin (margin-major), and the
    function that cuts a slice of them from ``pixels`` at ``size`` px."""
    image_hw = tuple(pixels.shape[1:])
    context = np.concatenate([with_context(np.asarray(xyxy).reshape(-1, 4), margin, image_hw) for margin in margins])
    return len(context), lambda idx: crop_boxes(pixels, context[idx], size)


def embed_in_context(pixels: torch.Tensor, xyxy: np.ndarray, margins: Sequence[float], model: ClipModel,
                     batch_size: int | None = None) -> torch.Tensor:
    """Embeddings ``(len(margins) * N, D)`` of ``context_crops``, encoded batch by batch on the
    model's device."""
    return model.encode_batches(*context_crops(pixels, xyxy, margins, model.image_size), batch_size)
