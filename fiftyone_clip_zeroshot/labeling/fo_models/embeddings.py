"""Our CLIP as a FiftyOne embedding model: images, patches and prompts in one space, for the
brain's similarity indexes (``compute_similarity``) and the App's text search.

The zoo source serves it as ``clip-zeroshot-embeddings`` (``zoo/``), with the checkpoint as
``clip_model``; an index built with that name can embed prompts again after a restart, which a
``Model`` instance cannot (the brain keeps only names).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fiftyone.core.models as fom
import numpy as np
import torch

from fiftyone_clip_zeroshot.core.geometry.images import load_image
from fiftyone_clip_zeroshot.core.geometry.windows import resize
from fiftyone_clip_zeroshot.core.models.model import DEFAULT_MODEL, ClipModel
from fiftyone_clip_zeroshot.core.models.prompt_templates import resolve_templates
from fiftyone_clip_zeroshot.labeling.fo_models.image_model import ImageModel
from fiftyone_clip_zeroshot.labeling.runs.jobs import resolve_model

EMBEDDINGS_ZOO_NAME = "clip-zeroshot-embeddings"


class ClipEmbeddingsModel(ImageModel, fom.EmbeddingsMixin, fom.PromptMixin):
    """Unit-norm CLIP embeddings of whole images (or the patches FiftyOne cuts) and of prompts.

    An image is read as the localizers read a crop: resized to the model's square input. Prompts
    go through ``prompt_templates`` when given (a prompt ensemble), as in ``detect``.
    """

    def __init__(self, model: str | ClipModel = DEFAULT_MODEL, device: str | None = None,
                 prompt_templates: str | Sequence[str] | None = None, batch_size: int | None = None):
        self.clip = resolve_model(model, device)
        self.templates = resolve_templates(prompt_templates)
        self.batch_size = batch_size

    @property
    def has_embeddings(self) -> bool:
        return True

    @property
    def can_embed_prompts(self) -> bool:
        return True

    def predict(self, arg: Any) -> np.ndarray:
        """The image's embedding (this model labels nothing; ``embed`` says the same)."""
        return self.embed(arg)

    def predict_all(self, args: Sequence[Any]) -> np.ndarray:
        return self.embed_all(args)

    def embed(self, arg: Any) -> np.ndarray:
        """``(D,)`` float32 embedding of one image (a path, PIL image or array)."""
        return self.embed_all([arg])[0]

    def embed_all(self, args: Sequence[Any]) -> np.ndarray:
        """``(N, D)`` float32 embeddings of images of any sizes, encoded in batches."""
        size = self.clip.image_size
        images = [load_image(arg).to(self.clip.device) for arg in args]

        def make_batch(index: slice) -> torch.Tensor:
            return torch.stack([resize(pixels, (size, size)) for pixels in images[index]])

        return self.clip.encode_batches(len(images), make_batch, self.batch_size).cpu().numpy()

    def embed_prompt(self, arg: str) -> np.ndarray:
        """``(D,)`` float32 embedding of one prompt."""
        return self.embed_prompts([arg])[0]

    def embed_prompts(self, args: Sequence[str]) -> np.ndarray:
        """``(P, D)`` float32 embeddings of prompts (each a template ensemble when ``prompt_templates``)."""
        return self.clip.encode_text(list(args), self.templates).cpu().numpy()
