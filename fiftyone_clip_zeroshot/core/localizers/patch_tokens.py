"""CLIP's patch tokens as a per-patch classifier: the encoder of tiles and the map it gives.

CLIP's last vision block mixes every patch with the whole image, so its patch tokens say little
about their own place. Training-free variants re-run only that block so that each token keeps
its own content: ``clearclip`` (query-query attention, no residual, no MLP) and ``naclip``
(key-key attention biased towards neighbouring patches by a Gaussian of ``NACLIP_SIGMA``
patches, no residual, no MLP). Each patch token then goes through what the tower applies to
what it pools (``Tower``: CLIP's layer norm and projection of its class token; SigLIP's
attention-pooling head, each token pooled alone) and is scored against the prompts like an image.

Tiles of ``dense_tile`` x the shorter side, every ``dense_stride`` of a tile, are encoded at
``dense_upscale`` x the model's input size (position embeddings interpolated). Each cell of the
map averages the logits of the patches covering it, then takes the family's probability (a
softmax over prompts plus negative prompts for CLIP, each prompt's sigmoid for SigLIP): the same
fixed meaning as every other heatmap. The dense
localizer's map, and the cheap map that ranks candidates (``candidates.rank_map``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
import transformers

from fiftyone_clip_zeroshot.core.geometry.windows import WindowGrid, coverage_mean

if TYPE_CHECKING:
    from fiftyone_clip_zeroshot.core.models.model import ClipModel
    from fiftyone_clip_zeroshot.core.options import LocalizeOptions
    from fiftyone_clip_zeroshot.core.scoring import PromptScorer

NACLIP_SIGMA = 5.0  # patches; NACLIP's neighbourhood


def dense_map(
    pixels: torch.Tensor, scorer: PromptScorer, opts: LocalizeOptions, heat_hw: tuple[int, int]
) -> torch.Tensor:
    """``(P, h, w)`` per-cell prompt probabilities from the patch tokens of every tile."""
    return scorer.family.probabilities(dense_logits(pixels, scorer, opts, heat_hw), scorer.count, dim=0)


def dense_logits(
    pixels: torch.Tensor, scorer: PromptScorer, opts: LocalizeOptions, heat_hw: tuple[int, int]
) -> torch.Tensor:
    """``(K, h, w)`` logits of every text (prompts, then negatives) per cell, averaged over the
    patches covering it."""
    image_hw = (int(pixels.shape[1]), int(pixels.shape[2]))
    model = scorer.model
    patch = model.model.config.vision_config.patch_size
    size = max(patch, round(model.image_size * opts.dense_upscale / patch) * patch)
    side = min(image_hw) * opts.dense_tile
    grid = WindowGrid.build(image_hw, side, side * opts.dense_stride, size)
    tokens = scorer.encode(len(grid), grid.cropper(pixels), encode=PatchTokens(opts.dense_attention, model),
                           keys=grid.keys())
    logits = scorer.logits(tokens.flatten(0, 2))
    return coverage_mean(_patch_boxes(grid.boxes, tokens.shape[1]), logits, image_hw, heat_hw)


@dataclass(frozen=True)
class PatchTokens:
    """``patch_tokens`` as an encoder of tiles; equal for equal attention, so that the tiles of
    several images share batches (``core.models.batching``; the images of one batch share one model)."""

    attention: str
    model: ClipModel = field(compare=False, repr=False)

    def __call__(self, tiles: torch.Tensor) -> torch.Tensor:
        return patch_tokens(self.model, tiles, self.attention)

    @property
    def kind(self) -> str:
        """The embedding store's name for these rows."""
        return f"tokens:{self.attention}"


@torch.inference_mode()
def patch_tokens(model: ClipModel, images: torch.Tensor, attention: str) -> torch.Tensor:
    """Unit-norm patch embeddings ``(N, g, g, D)`` of ``(N, 3, S, S)`` 0..255 images, ``S`` a
    multiple of the patch size; the last block is re-run in the ``attention`` variant."""
    vision = model.model.vision_model
    tower = tower_of(vision)
    hidden = hidden_before_last_block(vision, model.normalize(images))
    side = int(round((hidden.shape[1] - tower.prefix) ** 0.5))
    hidden = _last_block(vision.encoder.layers[-1], hidden, attention, side, tower.prefix)
    tokens = tower.head(model.model, hidden[:, tower.prefix:])
    return torch.nn.functional.normalize(tokens.float(), dim=-1).view(len(images), side, side, -1)


@dataclass(frozen=True)
class Tower:
    """How a vision tower's patch tokens become embeddings: ``prefix`` tokens (the class token)
    precede the patches, ``embed`` gives the first block's input, ``head`` maps each final patch
    token the way the tower maps what it pools, and ``layer_api`` lists what they read."""

    prefix: int
    embed: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
    head: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]
    layer_api: tuple[str, ...]


def _attention_pooled_head(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """SigLIP's pooling head for each token alone: its attention over one token is that token's
    value, projected, then the head's residual MLP."""
    vision = model.vision_model
    attention, width = vision.head.attention, tokens.shape[-1]
    x = torch.nn.functional.linear(vision.post_layernorm(tokens), attention.in_proj_weight[2 * width:],
                                   attention.in_proj_bias[2 * width:])
    x = attention.out_proj(x)
    return x + vision.head.mlp(vision.head.layernorm(x))


_BLOCKS = ("embeddings", "encoder.layers", "post_layernorm", "encoder.layers.0.layer_norm1",
           *(f"encoder.layers.0.self_attn.{name}" for name in ("q_proj", "k_proj", "v_proj", "out_proj",
                                                                "num_heads", "scale")))
CLASS_TOKEN = Tower(  # CLIP and the softmax families: class token, pre-norm, projection
    1, lambda vision, pixels: vision.pre_layrnorm(vision.embeddings(pixels, interpolate_pos_encoding=True)),
    lambda model, tokens: model.visual_projection(model.vision_model.post_layernorm(tokens)),
    (*_BLOCKS, "pre_layrnorm"))
ATTENTION_POOLED = Tower(  # SigLIP: no class token, no projection, an attention-pooling head
    0, lambda vision, pixels: vision.embeddings(pixels, interpolate_pos_encoding=True), _attention_pooled_head,
    (*_BLOCKS, "head.attention.in_proj_weight", "head.attention.out_proj", "head.layernorm", "head.mlp"))


def tower_of(vision: torch.nn.Module) -> Tower:
    """The ``Tower`` of a vision model: attention-pooled when it has a pooling head, else class-token."""
    return ATTENTION_POOLED if hasattr(vision, "head") else CLASS_TOKEN


def hidden_before_last_block(vision: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """``(N, prefix + g², W)`` hidden states of a vision tower entering its last block (positions
    interpolated). This and ``_last_block`` read transformers' internal layer API, which
    ``check_layer_api`` checks (``pyproject.toml`` bounds the transformers release)."""
    check_layer_api(vision)
    hidden = tower_of(vision).embed(vision, pixel_values)
    for layer in vision.encoder.layers[:-1]:
        hidden = layer(hidden, None)
    return hidden


def check_layer_api(vision: torch.nn.Module) -> None:
    """Raise a clear error if this transformers release moved what the dense localizer reads."""
    missing = [path for path in tower_of(vision).layer_api if not _has_path(vision, path)]
    if missing:
        raise RuntimeError(
            f"the dense localizer reads the vision tower's layers, and transformers {transformers.__version__} "
            f"lacks {', '.join(missing)}; install the release range pyproject.toml names, or use another method")


def _has_path(module: object, path: str) -> bool:
    for name in path.split("."):
        module = module[int(name)] if name.isdigit() else getattr(module, name, None)
        if module is None:
            return False
    return True


def _last_block(layer: torch.nn.Module, hidden: torch.Tensor, attention: str, side: int, prefix: int
                ) -> torch.Tensor:
    """The last encoder block without its residual and MLP, each token attending by its own
    query (``clearclip``) or key (``naclip``, plus the neighbourhood bias)."""
    attn = layer.self_attn
    x = layer.layer_norm1(hidden)
    own = attn.q_proj if attention == "clearclip" else attn.k_proj
    bias = _neighbourhood(side, x.device, x.dtype, prefix) if attention == "naclip" else None
    return self_attention(attn, x, own, own, bias)


def self_attention(attn: torch.nn.Module, x: torch.Tensor, queries: torch.nn.Module, keys: torch.nn.Module,
                   bias: torch.Tensor | None = None) -> torch.Tensor:
    """CLIP's multi-head attention of ``attn`` over ``(N, T, W)`` tokens ``x``, with ``queries`` and
    ``keys`` as the projections (``attn.q_proj`` and ``attn.k_proj``: the layer's own attention)."""
    n, t, _ = x.shape

    def heads(projection: torch.nn.Module) -> torch.Tensor:
        return projection(x).view(n, t, attn.num_heads, -1).transpose(1, 2)

    scores = heads(queries) @ heads(keys).transpose(-1, -2) * attn.scale
    if bias is not None:
        scores = scores + bias
    mixed = torch.softmax(scores, dim=-1) @ heads(attn.v_proj)
    return attn.out_proj(mixed.transpose(1, 2).reshape(n, t, -1))


def _neighbourhood(side: int, device: torch.device, dtype: torch.dtype, prefix: int = 1) -> torch.Tensor:
    """``(prefix + g², prefix + g²)`` attention bias: a Gaussian of the distance between patches
    (a class token is left unbiased)."""
    yy, xx = torch.meshgrid(torch.arange(side, device=device), torch.arange(side, device=device), indexing="ij")
    points = torch.stack([yy.flatten(), xx.flatten()], 1).float()
    bias = torch.zeros(side * side + prefix, side * side + prefix, device=device)
    bias[prefix:, prefix:] = -torch.cdist(points, points).square() / (2 * NACLIP_SIGMA**2)
    return bias.to(dtype)


def _patch_boxes(tiles: np.ndarray, side: int) -> np.ndarray:
    """``(N * g * g, 4)`` xyxy image-px boxes of the patches of each tile, row-major like the tokens."""
    steps = np.arange(side) / side
    x1 = tiles[:, None, None, 0] + (tiles[:, None, None, 2] - tiles[:, None, None, 0]) * steps[None, None, :]
    y1 = tiles[:, None, None, 1] + (tiles[:, None, None, 3] - tiles[:, None, None, 1]) * steps[None, :, None]
    width = ((tiles[:, 2] - tiles[:, 0]) / side)[:, None, None]
    height = ((tiles[:, 3] - tiles[:, 1]) / side)[:, None, None]
    x1, y1 = np.broadcast_arrays(x1, y1)
    return np.stack([x1, y1, x1 + width, y1 + height], -1).reshape(-1, 4)
