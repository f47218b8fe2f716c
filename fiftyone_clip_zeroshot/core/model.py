"""A CLIP checkpoint on a device: cached text embeddings and batched image embeddings.

``load_model`` takes any Hugging Face CLIP checkpoint id or local folder, plus the names of the
checkpoints that ship inside this package (``"shapes-world"``), and loads them all the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F

from fiftyone_clip_zeroshot.core.errors import ClipZeroShotError

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
_MODELS_DIR = Path(__file__).resolve().parents[1] / "models"
# Tiny CLIPs trained on the shapes world (scripts/train_shapes_clip.py): the demo model first, then
# the test models of the quality panel, trained by other recipes.
PACKAGED_MODELS: dict[str, Path] = {
    name: _MODELS_DIR / name for name in ("shapes-world", "shapes-single-object", "shapes-alt-text", "shapes-photo")
}

logger = logging.getLogger(__name__)


class ModelLoadError(ClipZeroShotError, RuntimeError):
    """The CLIP weights could not be found or are not a CLIP checkpoint."""


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


@dataclass
class ClipModel:
    """A loaded CLIP model with what the localizers need: input size, normalization, embeddings.

    ``batch_size`` is the default number of crops per forward pass; ``max_batch`` the most the device
    has held (set when an out-of-memory error halves a batch), which caps every later batch.
    """

    name: str
    model: torch.nn.Module
    tokenizer: Callable
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    device: torch.device
    dtype: torch.dtype
    batch_size: int = 256
    max_batch: int | None = None
    _text_cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    @property
    def fingerprint(self) -> str:
        """What makes this model's image embeddings what they are: a digest of its weights, dtype,
        input size, normalisation and device kind (the embedding store's model key)."""
        if self._fingerprint is None:
            digest = hashlib.blake2b(digest_size=12)
            digest.update(repr((self.image_size, self.image_mean, self.image_std, str(self.dtype),
                                self.device.type)).encode())
            for name, tensor in sorted(self.model.state_dict().items()):
                array = tensor.detach().cpu().contiguous()
                digest.update(f"{name}{array.dtype}{tuple(array.shape)}".encode())
                digest.update(array.reshape(-1).view(torch.uint8).numpy().data)
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    @property
    def max_text_tokens(self) -> int:
        return int(self.model.config.text_config.max_position_embeddings)

    @torch.inference_mode()
    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings ``(P, D)`` in float32, computed once per distinct prompt."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            tokens = self.tokenizer(list(missing), padding=True, return_tensors="pt")
            lengths = tokens["attention_mask"].sum(1).tolist()
            too_long = [p for p, n in zip(missing, lengths) if n > self.max_text_tokens]
            for prompt in too_long:
                warnings.warn(f"prompt longer than {self.max_text_tokens} tokens was truncated: {prompt[:60]!r}...",
                              stacklevel=3)
            if too_long:
                tokens = self.tokenizer(list(missing), padding=True, truncation=True,
                                        max_length=self.max_text_tokens, return_tensors="pt")
            tokens = {k: v.to(self.device) for k, v in tokens.items()}
            features = self.model.get_text_features(**tokens).pooler_output
            for prompt, emb in zip(missing, F.normalize(features.float(), dim=-1)):
                self._text_cache[prompt] = emb
        return torch.stack([self._text_cache[p] for p in prompts])

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8/float ``(N, 3, S, S)`` in 0..255 → the model's normalized input dtype."""
        mean = torch.tensor(self.image_mean, device=images.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.image_std, device=images.device).view(1, 3, 1, 1) * 255
        return ((images.float() - mean) / std).to(self.dtype)

    @torch.inference_mode()
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings ``(N, D)`` float32 of ``(N, 3, S, S)`` 0..255 images on the device."""
        return self.encode_batches(len(images), lambda idx: images[idx])

    @torch.inference_mode()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm embeddings ``(N, D)`` float32 of one batch of 0..255 images, no batching."""
        features = self.model.get_image_features(pixel_values=self.normalize(images)).pooler_output
        return F.normalize(features.float(), dim=-1)

    @torch.inference_mode()
    def encode_batches(
        self,
        count: int,
        make_batch: Callable[[slice], torch.Tensor],
        batch_size: int | None = None,
        encode: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Embed ``count`` images produced batch by batch by ``make_batch(slice)`` (0..255, on device)
        with ``encode`` (default: ``image_features``; the dense localizer passes its patch tokens).

        Building each batch lazily keeps memory bounded. ``batch_size`` defaults to the model's;
        on out-of-memory the batch is halved and retried, and the smaller size becomes the
        model's ``max_batch`` for every later call.
        """
        encode = encode or self.image_features
        out: list[torch.Tensor] = []
        start = 0
        while start < count:
            size = min(batch_size or self.batch_size, self.max_batch or count)
            stop = min(count, start + size)
            try:
                features = encode(make_batch(slice(start, stop)))
            except (RuntimeError, torch.OutOfMemoryError) as error:
                if not is_out_of_memory(error) or stop - start == 1:
                    raise
                self.max_batch = max(1, (stop - start) // 2)
                logger.warning("out of memory; crops per forward pass (batch_size) lowered to %d", self.max_batch)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                continue
            out.append(features)
            start = stop
        if not out:
            return torch.empty(0, self.model.config.projection_dim, device=self.device)
        return torch.cat(out)


def resolve_model_path(name_or_path: str) -> str:
    """Map a packaged model name to its folder; anything else is passed on as a hub id or path."""
    return str(PACKAGED_MODELS.get(name_or_path, name_or_path))


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = 256,
) -> ClipModel:
    """Load a CLIP checkpoint onto ``device``; raises ``ModelLoadError`` with the fix when the
    weights are missing (an unreachable hub fails at once) or not a CLIP model.

    Args:
        name_or_path: a hub id (``"openai/clip-vit-base-patch32"``), a folder written by
            ``save_pretrained``, or a packaged test model (``"shapes-world"``, see ``PACKAGED_MODELS``).
        device: ``"cuda"``, ``"cpu"``, a ``torch.device`` or None (CUDA when available).
        dtype: None: float16 on the GPU, float32 on the CPU.
        batch_size: default crops per forward pass (a run may pass its own).
    """
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {str(device)!r} was requested but this machine has no usable CUDA GPU; "
                             "use device='cpu' (or leave it unset to pick the GPU when there is one)")
    dtype = dtype or (torch.float16 if device.type == "cuda" else torch.float32)
    source = resolve_model_path(name_or_path)
    try:
        model, tokenizer, preprocess = _read_checkpoint(source, dtype, local_only=True)
    except (OSError, ValueError, KeyError) as error:
        if Path(source).exists() or not _hub_reachable():
            raise ModelLoadError(_load_error_message(name_or_path, error)) from None  # the message says it all
        try:
            model, tokenizer, preprocess = _read_checkpoint(source, dtype, local_only=False)
        except (OSError, ValueError, KeyError) as error:
            raise ModelLoadError(_load_error_message(name_or_path, error)) from error
    size = preprocess.get("crop_size", model.config.vision_config.image_size)
    return ClipModel(
        name=name_or_path,
        model=model.to(device).eval(),
        tokenizer=tokenizer,
        image_size=int(size["height"] if isinstance(size, dict) else size),
        image_mean=tuple(preprocess.get("image_mean", (0.48145466, 0.4578275, 0.40821073))),
        image_std=tuple(preprocess.get("image_std", (0.26862954, 0.26130258, 0.27577711))),
        device=device,
        dtype=dtype,
        batch_size=batch_size,
    )


def _read_checkpoint(source: str, dtype: torch.dtype, local_only: bool) -> tuple[Any, Any, dict]:
    """Model, tokenizer and preprocessor config of a checkpoint, without transformers' per-load
    progress bar; ``local_only``: from a folder or the local Hugging Face cache only."""
    from transformers import AutoTokenizer, CLIPModel
    from transformers.utils import cached_file
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = CLIPModel.from_pretrained(source, dtype=dtype, local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        with open(cached_file(source, "preprocessor_config.json", local_files_only=local_only)) as f:
            return model, tokenizer, json.load(f)
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect within ``timeout`` s. An offline machine
    then fails at once with the clear error, not after transformers' retries and their tracebacks."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def available_models() -> list[str]:
    """What loads on this machine without the hub: the packaged test models, then the CLIP
    checkpoints in the local Hugging Face cache."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = scan_cache_dir().repos
    except (CacheNotFound, OSError):  # no cache folder yet, or one that cannot be read
        repos = []
    cached = sorted(r.repo_id for r in repos if r.repo_type == "model" and "clip" in r.repo_id.lower())
    return [*PACKAGED_MODELS, *cached]


@lru_cache(maxsize=1)
def form_default_model() -> str:
    """The model a form should offer first: ``DEFAULT_MODEL`` where it can load (in the local cache,
    or the hub answers), else the packaged demo model, so that a newcomer offline can run at once."""
    if DEFAULT_MODEL in available_models() or _hub_reachable():
        return DEFAULT_MODEL
    return next(iter(PACKAGED_MODELS))


def model_hint(name: str) -> str:
    """A note for model fields: empty when ``name`` loads here, else that it needs the hub once."""
    if name in available_models() or Path(name).exists():
        return ""
    return f"{name!r} is not in the local Hugging Face cache: its first use downloads it (needs the hub)"


def _load_error_message(name_or_path: str, error: BaseException) -> str:
    if Path(name_or_path).exists():
        return (
            f"{name_or_path!r} is not a CLIP checkpoint folder (it needs config.json, model weights, "
            f"tokenizer files and preprocessor_config.json, as written by "
            f"CLIPModel/CLIPProcessor.save_pretrained): {_one_line(error)}"
        )
    packaged = ", ".join(repr(n) for n in PACKAGED_MODELS)
    return (
        f"Could not load CLIP weights {name_or_path!r}: they are not in the local Hugging Face cache and the hub "
        f"could not be reached. Download them once on a machine with internet access "
        f"(`hf download {name_or_path}`, or any from_pretrained call), or pass a local folder, "
        f"or use a packaged model ({packaged}) to try the plugin offline. "
        f"Cause: {type(error).__name__}: {_one_line(error)}"
    )


def _one_line(error: BaseException) -> str:
    """A library's message on one line, so it reads whole where only a line is shown (the App)."""
    return " ".join(str(error).split())
