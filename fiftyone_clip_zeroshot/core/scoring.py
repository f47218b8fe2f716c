"""Zero-shot probabilities for prompts, each in its model family's meaning (``core.models.families``),
and embeddings of boxes seen with some context.

Every encoder request names its rows by integer keys (the geometry that cut each crop), so that a
scorer bound to an image (``for_image``) reads the rows the embedding store already holds and
encodes only the rest (``core.embedding_store``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from fiftyone_clip_zeroshot.core.embedding_store import (
    Counts,
    EmbeddingStore,
    ImageEmbeddings,
    PixelsNeeded,
    pixels_digest,
)
from fiftyone_clip_zeroshot.core.geometry.boxes import with_context
from fiftyone_clip_zeroshot.core.geometry.windows import CONTEXT_CROP, crop_bounds, crop_boxes
from fiftyone_clip_zeroshot.core.models.model import ClipModel
from fiftyone_clip_zeroshot.core.stopwatch import stage

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.models.batching import SharedEncoder

MakeBatch = Callable[[slice | np.ndarray], torch.Tensor]


class PromptScorer:
    """Turns image embeddings into per-prompt probabilities as the model's family means them
    (``Family.probabilities``): for CLIP, a softmax at its own logit scale over the prompts plus
    negative prompts, of which only the prompts' share is kept; for SigLIP, each prompt's sigmoid.

    ``batch_size`` is this run's crops per forward pass (``None``: the model's); it never changes the
    shared model. ``shared``: the ``SharedEncoder`` through which several images encode together
    (``with_encoder``); None: this scorer encodes by itself. ``store``: the embedding store, used
    by the scorers ``for_image`` gives (``cache``: the image's entry; ``counts``: its crops).
    ``templates``: read each prompt as a prompt ensemble (``core.models.prompt_templates``).
    """

    def __init__(self, model: ClipModel, prompts: Sequence[str], negatives: Sequence[str],
                 batch_size: int | None = None, store: EmbeddingStore | None = None,
                 templates: Sequence[str] | None = None):
        self.model = model
        self.batch_size = batch_size
        self.scale = model.logit_scale
        self.bias = model.logit_bias
        self.family = model.family
        self.count = len(prompts)
        negatives = [n for n in negatives if templates or n not in prompts]
        self.text = torch.cat([model.encode_text(prompts, templates), model.encode_text(negatives)])
        self.shared: SharedEncoder | None = None
        self.store = store
        self.cache: ImageEmbeddings | None = None
        self.counts = Counts()
        self.stand_in = False  # the image is a stand-in (``embedding_store.stand_in``): no pixels to encode

    def for_image(self, pixels: torch.Tensor) -> PromptScorer:
        """This scorer for one image: its crops counted, and looked up in and added to the store."""
        scorer = copy.copy(self)
        scorer.counts = Counts()
        scorer.cache = image_entry(self.store, self.model, pixels)
        scorer.stand_in = pixels.is_meta
        return scorer

    def with_encoder(self, shared: SharedEncoder) -> PromptScorer:
        """This scorer, encoding through ``shared`` (texts are not encoded again)."""
        scorer = copy.copy(self)
        scorer.shared = shared
        return scorer

    def __call__(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(N, D)`` unit embeddings → ``(N, P)`` probabilities in [0, 1]."""
        with stage("scoring"):
            return self.family.probabilities(self.logits(embeddings), self.count, dim=1)

    def logits(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` unit embeddings → ``(..., K)`` logits of every text (prompts, then negatives)."""
        return self.scale * embeddings @ self.text.T + self.bias

    def encode(
        self,
        count: int,
        make_batch: MakeBatch,
        encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
        keys: np.ndarray | None = None,
    ) -> torch.Tensor:
        """``model.encode_batches`` at this run's batch size (through ``shared`` when set) of the
        rows the image's store entry lacks; ``keys``: ``(count, k)`` integers naming each row
        (without them, or without an entry, every row is encoded). ``make_batch`` takes a slice
        or an index array; ``encode`` names its rows' kind by a ``kind`` attribute (default ``"pooled"``)."""
        if keys is None or count == 0:
            self.counts.computed += count
            return self._encode(count, make_batch, encode)
        return stored_or_encoded(self.cache, self.counts, getattr(encode, "kind", "pooled"), keys, make_batch,
                                 lambda n, batch: self._encode(n, batch, encode), self.model.device)

    def _encode(self, count: int, make_batch: MakeBatch, encode: Callable[[torch.Tensor], torch.Tensor] | None
                ) -> torch.Tensor:
        if self.stand_in:
            raise PixelsNeeded(f"{count} crops of this image are not in the embedding store")
        with stage("encode"):
            if self.shared is not None:
                return self.shared.encode(count, make_batch, encode)
            return self.model.encode_batches(count, make_batch, self.batch_size, encode)

    def remember(self, name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """``compute()``, or the image's stored array of that ``name`` (``ImageEmbeddings.array``)."""
        if self.stand_in:
            compute = _pixels_needed
        return compute() if self.cache is None else self.cache.array(name, compute)

    def flush(self) -> None:
        """Write the image's newly encoded rows to the store (nothing without one)."""
        if self.cache is not None:
            with stage("store write"):
                self.cache.flush()

    def boxes(self, pixels: torch.Tensor, xyxy: np.ndarray, margins: Sequence[float]) -> torch.Tensor:
        """Probabilities ``(N, P)`` of xyxy boxes, averaged over square crops with each margin."""
        if len(xyxy) == 0:
            return torch.zeros(0, self.count, device=self.model.device)
        count, make_batch, keys = context_crops(pixels, xyxy, margins, self.model.image_size)
        return self(self.encode(count, make_batch, keys=keys)).view(len(margins), len(xyxy), -1).mean(0)


def _pixels_needed() -> np.ndarray:
    raise PixelsNeeded("a per-image array of this image is not in the embedding store")


def image_entry(store: EmbeddingStore | None, model: ClipModel, pixels: torch.Tensor) -> ImageEmbeddings | None:
    """The store's entry for uint8 ``(3, H, W)`` ``pixels`` under ``model`` (None without a store)."""
    return None if store is None else store.entry(model.fingerprint, pixels_digest(pixels), model.dtype)


def stored_or_encoded(cache: ImageEmbeddings | None, counts: Counts, kind: str, keys: np.ndarray,
                      make_batch: MakeBatch, encode: Callable[[int, MakeBatch], torch.Tensor],
                      device: torch.device) -> torch.Tensor:
    """The rows ``keys`` names: read from the image's store entry ``cache`` where it holds them, the
    others ``encode``d (``(count, make_batch)``) and added to it; ``counts`` tallies both. Without
    an entry, every row is encoded."""
    count = len(keys)
    if cache is None:
        counts.computed += count
        return encode(count, make_batch)
    stored, missing = cache.lookup(kind, keys)
    counts.stored += count - len(missing)
    counts.computed += len(missing)
    if not len(missing):
        return torch.from_numpy(stored).to(device, torch.float32)
    new = encode(len(missing), lambda index: make_batch(missing[index]))
    cache.add(kind, np.asarray(keys)[missing], new)
    out = new.new_empty((count, *new.shape[1:]))
    out[torch.as_tensor(missing, device=new.device)] = new
    if stored is not None:
        hits = np.setdiff1d(np.arange(count), missing)
        out[torch.as_tensor(hits, device=out.device)] = torch.from_numpy(stored[hits]).to(device, torch.float32)
    return out


def context_crops(pixels: torch.Tensor, xyxy: np.ndarray, margins: Sequence[float],
                  size: int) -> tuple[int, MakeBatch, np.ndarray]:
    """How many square crops frame each xyxy box with each margin (margin-major), the function
    that cuts some of them from ``pixels`` at ``size`` px, and their keys (pixel bounds and size)."""
    image_hw = tuple(pixels.shape[1:])
    context = np.concatenate([with_context(np.asarray(xyxy).reshape(-1, 4), margin, image_hw) for margin in margins])
    bounds = crop_bounds(context, image_hw)
    keys = np.concatenate([np.full((len(bounds), 1), CONTEXT_CROP), bounds, np.full((len(bounds), 1), size)], 1)
    return len(context), lambda idx: crop_boxes(pixels, context[idx], size), keys


def embed_in_context(pixels: torch.Tensor, xyxy: np.ndarray, margins: Sequence[float], model: ClipModel,
                     batch_size: int | None = None) -> torch.Tensor:
    """Embeddings ``(len(margins) * N, D)`` of ``context_crops``, encoded batch by batch on the
    model's device."""
    count, make_batch, _ = context_crops(pixels, xyxy, margins, model.image_size)
    return model.encode_batches(count, make_batch, batch_size)
