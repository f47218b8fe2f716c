"""Train the tiny shapes-world CLIP that ships in ``fiftyone_clip_zeroshot/models/shapes-world``.

A standard ``transformers.CLIPModel`` (small config) trained with CLIP's contrastive loss on
captioned single-object crops. Seeded, fixed step count; the result is saved with
``save_pretrained`` (safetensors, fp16) beside its tokenizer and image-processor config, so it
loads through the same code path as ``openai/clip-vit-base-patch32``.

    python scripts/train_shapes_clip.py            # 2000 steps; see README for timings
    python scripts/train_shapes_clip.py --steps 50 --out /tmp/m   # smoke run
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

from fiftyone_clip_zeroshot.shapes.tokenizer import write_tokenizer_files
from fiftyone_clip_zeroshot.shapes.world import caption, render_crop

PACKAGED = Path(__file__).resolve().parents[1] / "fiftyone_clip_zeroshot" / "models" / "shapes-world"
IMAGE_SIZE = 64
TRAIN_SEED = 1  # eval uses seed 2: crops never overlap
SPECIFICITY = {2: 1.0, 1: 0.3, 0: 0.1}  # image→text target weight by attributes a caption names


def _render_chunk(args: tuple[int, int, int]) -> tuple[np.ndarray, list[str]]:
    seed, start, stop = args
    crops = [render_crop(seed, i, IMAGE_SIZE) for i in range(start, stop)]
    return np.stack([np.asarray(img) for img, _ in crops]), [label for _, label in crops]


def render_pool(seed: int, count: int, workers: int = 2) -> tuple[torch.Tensor, list[str]]:
    """Render ``count`` crops in parallel as a uint8 ``(N, 3, S, S)`` tensor plus their labels."""
    chunks = [(seed, s, min(s + 2000, count)) for s in range(0, count, 2000)]
    with ProcessPoolExecutor(workers) as pool:
        parts = list(pool.map(_render_chunk, chunks))
    images = torch.from_numpy(np.concatenate([p[0] for p in parts])).permute(0, 3, 1, 2).contiguous()
    return images, [label for p in parts for label in p[1]]


def model_config(tokenizer: CLIPTokenizer) -> CLIPConfig:
    specials = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    text = dict(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=512, num_hidden_layers=3,
                num_attention_heads=4, max_position_embeddings=77, **specials)
    vision = dict(image_size=IMAGE_SIZE, patch_size=8, hidden_size=160, intermediate_size=640,
                  num_hidden_layers=4, num_attention_heads=4)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=128)


def normalize(images: torch.Tensor, processor: CLIPImageProcessor) -> torch.Tensor:
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


def train(out: Path, steps: int, batch_size: int, pool_size: int, lr: float, checkpoint_every: int = 400) -> None:
    torch.manual_seed(TRAIN_SEED)
    gen = torch.Generator().manual_seed(TRAIN_SEED)
    rng = np.random.default_rng(TRAIN_SEED)
    out.mkdir(parents=True, exist_ok=True)
    write_tokenizer_files(out)
    tokenizer = CLIPTokenizer(vocab=str(out / "vocab.json"), merges=str(out / "merges.txt"), model_max_length=77)
    processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    model = CLIPModel(model_config(tokenizer))

    t0 = time.time()
    images, labels = render_pool(TRAIN_SEED, pool_size)
    print(f"rendered {pool_size} crops in {time.time() - t0:.0f}s", flush=True)

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
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
        captions = [caption(label, rng) for label in batch_labels]
        positive = torch.tensor([[c.matches(label) for c in captions] for label in batch_labels])
        tokens = tokenizer([c.text for c in captions], padding=True, return_tensors="pt")
        specificity = torch.tensor([SPECIFICITY[c.specificity] for c in captions])
        loss = contrastive_loss(model, pixels, dict(tokens), positive, specificity)
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
    print(f"saved to {out} after {time.time() - t0:.0f}s of training", flush=True)


def save(model: CLIPModel, tokenizer: CLIPTokenizer, processor: CLIPImageProcessor, out: Path) -> None:
    """Save weights as fp16 safetensors (half the size; ``load_model`` casts to the device's dtype)."""
    copy.deepcopy(model).half().save_pretrained(out)
    tokenizer.save_pretrained(out)
    processor.save_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=PACKAGED)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--pool-size", type=int, default=60000)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args()
    train(args.out, args.steps, args.batch_size, args.pool_size, args.lr)


if __name__ == "__main__":
    main()
