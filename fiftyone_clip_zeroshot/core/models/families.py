"""CLIP-family models, registered by kind: how a checkpoint is recognised, what its score means,
and the defaults measured for it.

- **Softmax families** (CLIP, MetaCLIP, MetaCLIP 2, AltCLIP, Chinese-CLIP) learnt which text
  best matches an image among others. A score is a softmax, at the model's logit scale, over the
  prompts plus the negative prompts, of which only the prompts' share is kept: prompts compete,
  and an absent object loses to the negatives.
- **Sigmoid families** (SigLIP, SigLIP 2) learnt, for each pair alone, whether this text matches
  this image. A score is ``sigmoid(scale * cos + bias)``, the model's own probability, for each
  prompt by itself; several can be high together and all can be low. Negative prompts and other
  prompts take no share of it: the family's probability is already absolute, and a share would
  make it relative again (``benchmarks/thresholds.py --rule`` measures the other rules).

A new family is one ``Family`` in ``FAMILIES``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch


@dataclass(frozen=True)
class Family:
    """One kind of CLIP-family model.

    ``model_types``: the transformers ``config.model_type`` values it covers; ``sigmoid``: scores
    are the model's own per-pair probability (else a softmax against the other texts);
    ``thresholds``: the default ``confidence_thresh`` per method (measured on the quality panel
    where the family has a panel model);
    ``pad_texts``: texts padded to the model's full text length and read without a mask, as the
    family was trained (SigLIP)."""

    name: str
    model_types: tuple[str, ...]
    thresholds: Mapping[str, float]
    sigmoid: bool = False
    pad_texts: bool = False

    def probabilities(self, logits: torch.Tensor, count: int, dim: int = -1) -> torch.Tensor:
        """Scores in [0, 1] of the first ``count`` texts along ``dim`` of ``logits`` (scale x cosine
        + bias, for every prompt and then every negative)."""
        if self.sigmoid:
            return torch.sigmoid(logits.narrow(dim, 0, count))
        return torch.softmax(logits, dim=dim).narrow(dim, 0, count)

    def none_of(self, negatives: np.ndarray) -> np.ndarray:
        """``(N,)`` how likely each crop shows none of the prompts, from ``(N, B)`` scores of the
        negatives: their share together for a softmax, the best one's probability for a sigmoid."""
        if not negatives.shape[1]:
            return np.zeros(len(negatives), negatives.dtype)
        return negatives.max(1) if self.sigmoid else negatives.sum(1)

    def threshold(self, method: str) -> float:
        """The default ``confidence_thresh`` of ``method`` for this family."""
        return self.thresholds[method]


def _thresholds(**by_method: float) -> Mapping[str, float]:
    return MappingProxyType(by_method)


CLIP = Family(
    "CLIP", ("clip", "metaclip_2", "altclip", "chinese_clip"),
    _thresholds(sliding_window=0.6, occlusion=0.5, proposals=0.6, dense=0.6),  # benchmarks/quality.py --panel
)
SIGLIP = Family(
    "SigLIP", ("siglip",),
    # shapes-siglip, on a plateau that holds with its bias moved by ±2 (benchmarks/thresholds.py, docs/quality.md)
    _thresholds(sliding_window=0.3, occlusion=0.3, proposals=0.3, dense=0.05),
    sigmoid=True, pad_texts=True,
)
FAMILIES: dict[str, Family] = {"clip": CLIP, "siglip": SIGLIP}
# model types a family might be expected to cover, and what to load instead
NOT_READ = {
    "siglip2": "SigLIP 2's NaFlex checkpoints (variable resolution) are not read; its fixed-resolution "
               "checkpoints are SigLIP models (google/siglip2-base-patch16-224)",
}


def family_of(model_type: str) -> Family | None:
    """The family whose models have this transformers ``model_type``; None: not a CLIP-family model."""
    return next((f for f in FAMILIES.values() if model_type in f.model_types), None)


def supported_model_types() -> Sequence[str]:
    """Every transformers ``model_type`` some family reads, for error messages."""
    return [t for f in FAMILIES.values() for t in f.model_types]
