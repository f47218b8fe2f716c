"""Train the tiny CLIPs that ship in ``fiftyone_clip_zeroshot/models/`` (the test-model panel).

Each is a standard ``transformers.CLIPModel`` (small config) trained with CLIP's contrastive loss
by a seeded recipe with a fixed step count, saved with ``save_pretrained`` (safetensors, fp16)
beside its tokenizer and image-processor config, so it loads through the same code path as
``openai/clip-vit-base-patch32``. The recipes differ on purpose, so that the localizers are
measured on models that were not built for them:

- ``shapes-world``: single-object crops, with fragments and groups of shapes captioned as
  generic negatives (what sliding-window fusion likes);
- ``shapes-alt-text``: windows cut from scenes (5 of 8 framing one shape with some context, the
  rest random), captioned as people caption photos: every shape at least half visible is named,
  partly visible ones like whole ones; no negatives of any kind; patch 16 at 64 px;
- ``shapes-single-object``: another architecture (patch 16 at 96 px, 6 vision and 2 text
  layers), single-object and background crops only, another seed;
- ``shapes-photo``: shapes-world's kinds of crops, half of them on cuts of installed photos that
  no benchmark uses (``photos.training_backgrounds``), patch 16 at 64 px; trained in two runs, the
  second (``--init`` the first's folder) with more photos and more empty crops;
- ``shapes-siglip``: another family, a ``transformers.SiglipModel`` (attention-pooled vision
  tower, no class token, no image projection) trained with SigLIP's pairwise sigmoid loss on
  one-shape, two-shape and empty crops whose every caption names each shape fully, patch 16 at
  64 px, texts padded to their full 16 tokens as SigLIP's are; trained in two runs like
  ``shapes-photo``, the second (``--init`` the first's folder) at a lower learning rate.

    python scripts/train_shapes_clip.py --recipe shapes-alt-text        # see README for timings
    python scripts/train_shapes_clip.py --recipe shapes-photo-base --out /tmp/base
    python scripts/train_shapes_clip.py --recipe shapes-photo --init /tmp/base
    python scripts/train_shapes_clip.py --recipe shapes-siglip-base --out /tmp/siglip-base
    python scripts/train_shapes_clip.py --recipe shapes-siglip --init /tmp/siglip-base
    python scripts/train_shapes_clip.py --steps 50 --out /tmp/m          # smoke run
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import (
    AutoModel,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTokenizer,
    SiglipConfig,
    SiglipImageProcessor,
    SiglipModel,
)

from fiftyone_clip_zeroshot.core.models.model import PACKAGED_MODELS, load_model
from fiftyone_clip_zeroshot.photos import training_backgrounds
from fiftyone_clip_zeroshot.shapes.evaluate import zero_shot_accuracy
from fiftyone_clip_zeroshot.shapes.tokenizer import write_tokenizer_files
from fiftyone_clip_zeroshot.shapes.world import (
    ALT_TEXT_WORDS,
    BACKGROUND,
    BACKGROUND_CAPTIONS,
    PAIR_JOIN,
    alt_text,
    caption,
    render_crop,
    render_window_crops,
)

SPECIFICITY = {2: 1.0, 1: 0.3, 0: 0.1}  # image→text target weight by attributes a caption names
CROPS_PER_SCENE = 8
FRAMED_WINDOWS = 0.625  # alt-text recipe: share of a scene's windows that frame one shape


@dataclass(frozen=True)
class Described:
    """A caption for one training crop: its text, a key that decides which crops it truly
    describes (``Recipe.matches``) and its weight on the image side of the loss."""

    text: str
    key: Any
    weight: float = 1.0


@dataclass(frozen=True)
class Recipe:
    """How one panel model is made: data, captions, architecture, seed and step count."""

    seed: int
    image_size: int
    vision: dict
    render: Callable[[int, int, int, int], tuple[np.ndarray, list]]  # (seed, start, stop, size)
    describe: Callable[[Any, np.random.Generator], Described]
    matches: Callable[[Any, Any], bool]  # (caption key, crop label)
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    init: str | None = None  # a recipe whose trained weights this one starts from (``--init``)
    extra_words: tuple[str, ...] = ()
    family: str = "clip"  # or "siglip": SigLIP's architecture, loss and text padding
    pool_size: int = 60000  # crops rendered once, reused with flips and quarter turns
    adamw: dict = field(default_factory=dict)  # AdamW's betas and eps where they differ from torch's
    decay_matrices_only: bool = False  # weight decay on matrices only, not on biases, norms or the logit scale
    text: dict = field(default_factory=lambda: dict(hidden_size=128, intermediate_size=512, num_hidden_layers=3,
                                                     num_attention_heads=4))


def _single_crops(
    mix: dict[str, float] | None, photo_share: float = 0.0
) -> Callable[[int, int, int, int], tuple[np.ndarray, list]]:
    """``render_crop``'s crops; ``photo_share`` of them on cuts of ``training_backgrounds``."""
    def render(seed: int, start: int, stop: int, size: int) -> tuple[np.ndarray, list]:
        photos = training_backgrounds() if photo_share else None
        crops = [render_crop(seed, i, size, mix, photos, photo_share) for i in range(start, stop)]
        return np.stack([np.asarray(img) for img, _ in crops]), [label for _, label in crops]
    return render


def _window_crops(seed: int, start: int, stop: int, size: int) -> tuple[np.ndarray, list]:
    scenes = range(start // CROPS_PER_SCENE, -(-stop // CROPS_PER_SCENE))
    crops = [c for i in scenes for c in render_window_crops(seed, i, size, CROPS_PER_SCENE, framed=FRAMED_WINDOWS)]
    crops = crops[start - scenes.start * CROPS_PER_SCENE:][: stop - start]
    return np.stack([np.asarray(c.image) for c in crops]), [frozenset(c.names) for c in crops]


def _describe_label(label: str, rng: np.random.Generator) -> Described:
    cap = caption(label, rng)
    return Described(cap.text, cap, SPECIFICITY[cap.specificity])


def _describe_names(names: frozenset, rng: np.random.Generator) -> Described:
    return Described(alt_text(tuple(rng.permutation(sorted(names))), rng), names)


ONE_SHAPE_TEMPLATES = ("a photo of a {}", "a {}", "a picture of a {}", "an image of a {}", "{}", "a photo of the {}")
TWO_SHAPE_TEMPLATES = ("a {} and a {}", "a photo of a {} and a {}", "a picture of a {} and a {}",
                       "an image of a {} and a {}")


def _shown_classes(label: str) -> frozenset:
    """The classes a one-shape, pair or background crop shows (``render_crop``'s labels)."""
    return frozenset() if label == BACKGROUND else frozenset(label.split(PAIR_JOIN))


def _describe_fully(label: str, rng: np.random.Generator) -> Described:
    """A caption that names every shape of the crop by colour and shape, or says it is empty:
    under the sigmoid loss a caption naming one attribute would be a positive for many crops."""
    names = _shown_classes(label)
    if not names:
        return Described(BACKGROUND_CAPTIONS[int(rng.integers(len(BACKGROUND_CAPTIONS)))], names)
    templates = ONE_SHAPE_TEMPLATES if len(names) == 1 else TWO_SHAPE_TEMPLATES
    text = templates[int(rng.integers(len(templates)))].format(*rng.permutation(sorted(names)))
    return Described(text, names)


RECIPES: dict[str, Recipe] = {
    "shapes-world": Recipe(
        seed=1, image_size=64,
        vision=dict(patch_size=8, hidden_size=160, intermediate_size=640, num_hidden_layers=4, num_attention_heads=4),
        render=_single_crops(None), describe=_describe_label, matches=lambda cap, label: cap.matches(label),
    ),
    "shapes-alt-text": Recipe(
        seed=11, image_size=64,
        vision=dict(patch_size=16, hidden_size=160, intermediate_size=640, num_hidden_layers=4, num_attention_heads=4),
        render=_window_crops, describe=_describe_names, matches=lambda key, names: key == names, batch_size=128,
        steps=6000, extra_words=ALT_TEXT_WORDS,
    ),
    "shapes-single-object": Recipe(
        seed=21, image_size=96,
        vision=dict(patch_size=16, hidden_size=128, intermediate_size=512, num_hidden_layers=6, num_attention_heads=4),
        render=_single_crops({"object": 0.85, "background": 0.15}), describe=_describe_label,
        matches=lambda cap, label: cap.matches(label), batch_size=128,
        text=dict(hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4),
    ),
    "shapes-photo-base": Recipe(
        seed=31, image_size=64,
        vision=dict(patch_size=16, hidden_size=160, intermediate_size=640, num_hidden_layers=4, num_attention_heads=4),
        render=_single_crops({"object": 0.6, "fragment": 0.12, "group": 0.1, "background": 0.18}, photo_share=0.5),
        describe=_describe_label, matches=lambda cap, label: cap.matches(label),
    ),
}
RECIPES["shapes-siglip-base"] = Recipe(
    seed=41, image_size=64, family="siglip", batch_size=128, steps=6000, pool_size=30000,
    vision=dict(patch_size=16, hidden_size=192, intermediate_size=576, num_hidden_layers=4, num_attention_heads=4),
    text=dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4),
    render=_single_crops({"object": 0.58, "pair": 0.14, "background": 0.28}), describe=_describe_fully,
    matches=lambda names, label: names == _shown_classes(label), extra_words=("and",),
    adamw=dict(betas=(0.9, 0.98), eps=1e-6), decay_matrices_only=True,
)
RECIPES["shapes-siglip"] = replace(  # then a lower rate from those weights: 90.3 % -> 92.2 %
    RECIPES["shapes-siglip-base"], steps=1600, lr=3e-4, init="shapes-siglip-base",
)
RECIPES["shapes-photo"] = replace(  # then more photos and more empty crops: photo clutter is not a shape
    RECIPES["shapes-photo-base"], seed=32, steps=1200, lr=3e-4, init="shapes-photo-base",
    render=_single_crops({"object": 0.5, "fragment": 0.1, "group": 0.05, "background": 0.35}, photo_share=0.7),
)


def _render_chunk(args: tuple[str, int, int, int]) -> tuple[np.ndarray, list]:
    name, start, stop, size = args
    recipe = RECIPES[name]
    return recipe.render(recipe.seed, start, stop, size)


def render_pool(name: str, count: int, workers: int = 2) -> tuple[torch.Tensor, list]:
    """Render ``count`` crops of recipe ``name`` in parallel: uint8 ``(N, 3, S, S)`` plus labels."""
    size = RECIPES[name].image_size
    chunks = [(name, s, min(s + 2000, count), size) for s in range(0, count, 2000)]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_render_chunk, chunks))
    images = torch.from_numpy(np.concatenate([p[0] for p in parts])).permute(0, 3, 1, 2).contiguous()
    return images, [label for p in parts for label in p[1]]


SIGLIP_TEXT_TOKENS = 16  # SigLIP pads every text to its full length; the pooled state is the last one


def new_model(recipe: Recipe, tokenizer: CLIPTokenizer) -> CLIPModel | SiglipModel:
    """A freshly initialised model of the recipe's family and size."""
    specials = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(image_size=recipe.image_size, **recipe.vision)
    if recipe.family == "siglip":
        # No image projection: the text head must land in the vision width.
        text = dict(vocab_size=len(tokenizer), max_position_embeddings=SIGLIP_TEXT_TOKENS,
                    projection_size=recipe.vision["hidden_size"], **recipe.text, **specials)
        model = SiglipModel(SiglipConfig(text_config=text, vision_config=vision))
        with torch.no_grad():  # the SigLIP paper's start; at transformers' zeros the loss crawls
            model.logit_scale.fill_(math.log(10))
            model.logit_bias.fill_(-10)
        return model
    text = dict(vocab_size=len(tokenizer), max_position_embeddings=77, **recipe.text, **specials)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=128))


def image_processor(recipe: Recipe) -> CLIPImageProcessor | SiglipImageProcessor:
    size = recipe.image_size
    if recipe.family == "siglip":
        return SiglipImageProcessor(size={"height": size, "width": size})
    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def tokenize(recipe: Recipe, tokenizer: CLIPTokenizer, texts: list[str]) -> dict:
    """Token ids as the family's model reads them: SigLIP's padded to full length, without a mask."""
    if recipe.family == "siglip":
        return {"input_ids": tokenizer(texts, padding="max_length", max_length=SIGLIP_TEXT_TOKENS,
                                       return_tensors="pt")["input_ids"]}
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def normalize(images: torch.Tensor, processor: CLIPImageProcessor | SiglipImageProcessor) -> torch.Tensor:
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flips and quarter turns (shapes are drawn at random angles anyway) plus brightness jitter."""
    if torch.rand(1, generator=gen) < 0.5:
        images = images.flip(3)
    images = torch.rot90(images, int(torch.randint(4, (1,), generator=gen)), (2, 3))
    gain = 1 + 0.15 * (torch.rand(images.shape[0], 1, 1, 1, generator=gen) - 0.5)
    return (images.float() * gain).clamp(0, 255)


def contrastive_loss(
    model: CLIPModel, pixels: torch.Tensor, tokens: dict, positive: torch.Tensor, specificity: torch.Tensor
) -> torch.Tensor:
    """CLIP's symmetric loss with several positives: ``positive[i, j]`` says caption j truly
    describes image i. On the image side, specific captions weigh more (``specificity``, per
    caption), so an image matches "a red circle" better than "a red shape" or "an object"."""
    image = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    text = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
    logits = model.logit_scale.exp() * image @ text.T
    weighted = positive.float() * specificity[None, :]
    image_target = weighted / weighted.sum(1, keepdim=True)
    text_target = positive.T.float() / positive.T.float().sum(1, keepdim=True)
    return (F.cross_entropy(logits, image_target) + F.cross_entropy(logits.T, text_target)) / 2


def sigmoid_loss(
    model: SiglipModel, pixels: torch.Tensor, tokens: dict, positive: torch.Tensor, specificity: torch.Tensor
) -> torch.Tensor:
    """SigLIP's loss: every image-caption pair is its own binary question, ``positive`` or not
    (``specificity`` is unused: a general caption that truly describes an image is simply true)."""
    image = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    text = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
    logits = model.logit_scale.exp() * image @ text.T + model.logit_bias
    signs = positive.float() * 2 - 1
    return -F.logsigmoid(signs * logits).sum(1).mean()


LOSSES = {"clip": contrastive_loss, "siglip": sigmoid_loss}


def optimizer_for(model: torch.nn.Module, recipe: Recipe, lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay 0.05, on every parameter or (``decay_matrices_only``) on matrices."""
    params = list(model.parameters())
    groups: list[dict] = [{"params": params}]
    if recipe.decay_matrices_only:
        groups = [{"params": [p for p in params if p.ndim >= 2]},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, weight_decay=0.05, **recipe.adamw)


def train(name: str, out: Path, steps: int, batch_size: int, pool_size: int, lr: float,
          checkpoint_every: int = 400, init: Path | None = None, eval_crops: int = 300) -> None:
    """Train recipe ``name`` for ``steps`` and save it to ``out`` every ``checkpoint_every`` steps, scoring
    ``eval_crops`` held-out crops at each save (the training log of docs/development.md)."""
    torch.set_flush_denormal(True)  # AdamW's second moments underflow into denormals, slow on x86
    recipe = RECIPES[name]
    torch.manual_seed(recipe.seed)
    gen = torch.Generator().manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer_files(out, recipe.extra_words)
    tokenizer = CLIPTokenizer(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"), model_max_length=77)
    processor = image_processor(recipe)
    model = AutoModel.from_pretrained(init).float() if init else new_model(recipe, tokenizer)

    t0 = time.time()
    images, labels = render_pool(name, pool_size)
    print(f"rendered {pool_size} crops in {time.time() - t0:.0f}s", flush=True)

    optimizer = optimizer_for(model, recipe, lr)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    t0 = time.time()
    for step in range(steps):
        idx = torch.randint(pool_size, (batch_size,), generator=gen)
        pixels = normalize(augment(images[idx], gen), processor)
        batch_labels = [labels[i] for i in idx.tolist()]
        captions = [recipe.describe(label, rng) for label in batch_labels]
        positive = torch.tensor([[recipe.matches(c.key, label) for c in captions] for label in batch_labels])
        tokens = tokenize(recipe, tokenizer, [c.text for c in captions])
        specificity = torch.tensor([c.weight for c in captions])
        loss = LOSSES[recipe.family](model, pixels, tokens, positive, specificity)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - t0:.0f}s", flush=True)
        if (step + 1) % checkpoint_every == 0 or step == steps - 1:
            save(model, tokenizer, processor, out)
            if eval_crops:
                accuracy = zero_shot_accuracy(load_model(out, device="cpu"), eval_crops)
                print(f"step {step:5d}  checkpoint: held-out crop accuracy {accuracy:.1%} ({eval_crops} crops)",
                      flush=True)
    print(f"saved to {out} after {time.time() - t0:.0f}s of training", flush=True)


def save(model: CLIPModel | SiglipModel, tokenizer: CLIPTokenizer,
         processor: CLIPImageProcessor | SiglipImageProcessor, out: Path) -> None:
    """Save weights as fp16 safetensors (half the size; ``load_model`` casts to the device's dtype)."""
    copy.deepcopy(model).half().save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="shapes-world")
    parser.add_argument("--out", type=Path, default=None, help="default: fiftyone_clip_zeroshot/models/<recipe>")
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's step count")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the recipe's batch size")
    parser.add_argument("--pool-size", type=int, default=None, help="default: the recipe's pool size")
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's learning rate")
    parser.add_argument("--init", type=Path, default=None, help="the weights of the recipe's init recipe")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--eval-crops", type=int, default=300, help="held-out crops scored per checkpoint (0: none)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or PACKAGED_MODELS["shapes-world"].parent / args.recipe
    recipe = RECIPES[args.recipe]
    if recipe.init and not args.init:
        parser.error(f"{args.recipe} starts from {recipe.init}: train --recipe {recipe.init} first, then pass --init")
    train(args.recipe, out, args.steps or recipe.steps, args.batch_size or recipe.batch_size,
          args.pool_size or recipe.pool_size,
          args.lr or recipe.lr, init=args.init, eval_crops=args.eval_crops)


if __name__ == "__main__":
    main()
