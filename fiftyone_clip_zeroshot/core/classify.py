"""CLIP as a judge of given regions: score boxes (verify/relabel) and whole images (classify).

Both use the same batched, on-device cropping as the localizers, and score in the model
family's meaning (``core.models.families``). A box is background when the background prompt matches it
better than any class, so a box that shows nothing in particular can say so; whole-image scores
are over the classes alone (for CLIP a softmax, because an image classification has to pick one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from fiftyone_clip_zeroshot.core.geometry.windows import crop_boxes
from fiftyone_clip_zeroshot.core.models.model import ClipModel
from fiftyone_clip_zeroshot.core.models.prompt_templates import resolve_templates
from fiftyone_clip_zeroshot.core.options import OptionsError, check_prompts
from fiftyone_clip_zeroshot.core.scoring import PromptScorer, embed_in_context

BACKGROUND = "background"  # the label of a box that CLIP finds closer to the background prompt
DEFAULT_TEMPLATE = "a photo of a {}"


@dataclass
class BoxVerdict:
    """CLIP's reading of each box: ``labels[i]`` is a class or ``BACKGROUND``, ``scores[i]`` its
    probability; ``probs`` ``(N, C)`` holds every class's probability (the rest is background)."""

    labels: list[str]
    scores: np.ndarray
    probs: np.ndarray


def class_templates(template: str, prompt_templates: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """The templates each class is read through: ``prompt_templates`` (a set's name or a list, see
    ``core.models.prompt_templates``) when given, else the one ``template``."""
    if "{}" not in template:
        raise OptionsError(f"template must contain '{{}}' where the class goes, got {template!r}")
    return resolve_templates(prompt_templates) or (template,)


def score_boxes(
    pixels: torch.Tensor,
    xyxy: np.ndarray,
    classes: Sequence[str],
    model: ClipModel,
    margin: float = 0.1,
    templates: Sequence[str] = (DEFAULT_TEMPLATE,),
    background: Sequence[str] = ("a photo of background",),
) -> BoxVerdict:
    """Which of ``classes`` each xyxy box of uint8 ``(3, H, W)`` ``pixels`` shows, if any, each
    class read through ``templates`` (``class_templates``).

    Each box is cut as a square with ``margin`` context on each side (CLIP sees whole objects
    best that way) and crops are embedded in batches on the model's device.
    """
    classes = check_prompts(classes)
    embeddings = embed_in_context(pixels, np.asarray(xyxy, np.float64).reshape(-1, 4), (margin,), model)
    scorer = PromptScorer(model, classes, background, templates=templates)
    every = model.family.probabilities(scorer.logits(embeddings), len(scorer.text)).cpu().numpy()
    probs = every[:, : len(classes)]
    rest = model.family.none_of(every[:, len(classes):])
    best = probs.argmax(1) if len(probs) else np.zeros(0, int)
    top = probs[np.arange(len(probs)), best]
    labels = [classes[b] if p >= r else BACKGROUND for b, p, r in zip(best, top, rest)]
    return BoxVerdict(labels, np.maximum(top, rest).astype(np.float32), probs.astype(np.float32))


def classify_image(
    pixels: torch.Tensor, classes: Sequence[str], model: ClipModel, templates: Sequence[str] = (DEFAULT_TEMPLATE,)
) -> tuple[np.ndarray, np.ndarray]:
    """Zero-shot class probabilities and logits ``(C,)`` of a uint8 ``(3, H, W)`` image, each
    class read through ``templates``.

    The image is seen as CLIP's own preprocessing sees it: the central square, resized.
    """
    classes = check_prompts(classes)
    height, width = pixels.shape[1:]
    side = min(height, width)
    left, top = (width - side) / 2, (height - side) / 2
    crop = crop_boxes(pixels, np.array([[left, top, left + side, top + side]]), model.image_size)
    logits = PromptScorer(model, classes, (), templates=templates).logits(model.encode_images(crop))[0]
    return model.family.probabilities(logits, len(classes), dim=0).cpu().numpy(), logits.cpu().numpy()
