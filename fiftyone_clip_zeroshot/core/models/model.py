"""A CLIP-family checkpoint on a device: cached text embeddings and batched image embeddings.

``load_model`` takes any Hugging Face checkpoint id or local folder of a family in
``core.models.families`` (CLIP, MetaCLIP, SigLIP, AltCLIP, ...), plus the names of the checkpoints that
ship inside this package (``"shapes-world"``), and loads them all the same way.
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

from fiftyone_clip_zeroshot.core.errors import ModelLoadError
from fiftyone_clip_zeroshot.core.models.families import CLIP, NOT_READ, Family, family_of, supported_model_types
from fiftyone_clip_zeroshot.core.models.openclip import is_open_clip_folder, read_open_clip

DEFAULT_MODEL = "openai/clip-vit-base-patch32"
_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"  # fiftyone_clip_zeroshot/models
# Tiny CLIPs trained on the shapes world (scripts/train_shapes_clip.py): the demo model first, then
# the test models of the quality panel, trained by other recipes (the last one a SigLIP).
PACKAGED_MODELS: dict[str, Path] = {
    name: _MODELS_DIR / name
    for name in ("shapes-world", "shapes-single-object", "shapes-alt-text", "shapes-photo", "shapes-siglip")
}

logger = logging.getLogger(__name__)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or "out of memory" in str(error).lower()


@dataclass
class ClipModel:
    """A loaded CLIP-family model with what the localizers need: input size, normalization,
    embeddings, and its ``family`` (what a score means, default thresholds).

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
    family: Family = CLIP
    batch_size: int = 256
    max_batch: int | None = None
    _text_cache: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    @property
    def logit_bias(self) -> float:
        """The sigmoid families' learnt bias (0 for the others)."""
        bias = getattr(self.model, "logit_bias", None)
        return 0.0 if bias is None else float(bias.detach())

    @property
    def embedding_dim(self) -> int:
        """Width of the shared image-text space (SigLIP has no projection: the vision width)."""
        config = self.model.config
        return int(getattr(config, "projection_dim", None) or config.vision_config.hidden_size)

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
        positions = int(self.model.config.text_config.max_position_embeddings)
        return min(positions, int(getattr(self.tokenizer, "model_max_length", positions) or positions))

    def tokenize(self, prompts: list[str], truncate: bool = False) -> dict[str, torch.Tensor]:
        """Token ids on the device as the family reads them: padded to the longest prompt with
        a mask, or (``pad_texts``) to the full text length without one, as SigLIP was trained."""
        if self.family.pad_texts:
            tokens = self.tokenizer(prompts, padding="max_length", max_length=self.max_text_tokens,
                                    truncation=truncate, return_tensors="pt")
            tokens = {"input_ids": tokens["input_ids"]}
        else:
            tokens = self.tokenizer(prompts, padding=True, return_tensors="pt", truncation=truncate,
                                    **({"max_length": self.max_text_tokens} if truncate else {}))
        return {k: v.to(self.device) for k, v in tokens.items()}

    @torch.inference_mode()
    def encode_text(self, prompts: Sequence[str], templates: Sequence[str] | None = None) -> torch.Tensor:
        """Unit-norm text embeddings ``(P, D)`` in float32, computed once per distinct text. With
        ``templates`` (``"{}"`` strings), each prompt's is the normalised mean of its templates'."""
        if not prompts:
            return torch.zeros(0, self.embedding_dim, device=self.device)
        if templates:
            texts = [template.format(prompt) for prompt in prompts for template in templates]
            ensemble = self.encode_text(texts).view(len(prompts), len(templates), -1).mean(1)
            return F.normalize(ensemble, dim=-1)
        missing = [p for p in dict.fromkeys(prompts) if p not in self._text_cache]
        if missing:
            lengths = [len(ids) for ids in self.tokenizer(missing)["input_ids"]]
            too_long = [p for p, n in zip(missing, lengths) if n > self.max_text_tokens]
            for prompt in too_long:
                warnings.warn(f"prompt longer than {self.max_text_tokens} tokens was truncated: {prompt[:60]!r}...",
                              stacklevel=3)
            tokens = self.tokenize(missing, truncate=bool(too_long) or self.family.pad_texts)
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
            return torch.empty(0, self.embedding_dim, device=self.device)
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
    """Load a CLIP-family checkpoint onto ``device``, its family read from its config; raises
    ``ModelLoadError`` with the fix when the weights are missing (an unreachable hub fails at
    once) or of another kind.

    Args:
        name_or_path: a hub id (``"openai/clip-vit-base-patch32"``, ``"google/siglip-base-patch16-224"``),
            a folder written by ``save_pretrained``, an OpenCLIP checkpoint (a folder with
            ``open_clip_config.json``, or ``"hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"``; needs the
            ``open-clip`` extra), or a packaged test model (``"shapes-world"``, see ``PACKAGED_MODELS``).
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
        model, tokenizer, preprocess, family = _read_checkpoint(source, dtype, local_only=True)
    except (OSError, ValueError, KeyError) as error:
        if Path(source).exists() or not _hub_reachable():
            raise ModelLoadError(_load_error_message(name_or_path, error)) from None  # the message says it all
        try:
            model, tokenizer, preprocess, family = _read_checkpoint(source, dtype, local_only=False)
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
        family=family,
        batch_size=batch_size,
    )


def _read_checkpoint(source: str, dtype: torch.dtype, local_only: bool) -> tuple[Any, Any, dict, Family]:
    """Model, tokenizer, preprocessor config and family of a checkpoint, without transformers'
    per-load progress bar; ``local_only``: from a folder or the local Hugging Face cache only.
    A checkpoint of no family raises ``ModelLoadError`` before its weights are read."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import cached_file
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        if source.startswith("hf-hub:") or is_open_clip_folder(source):
            return (*read_open_clip(source, dtype, local_only), CLIP)
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
        family = family_of(config.model_type)
        if family is None:
            found = ", ".join(getattr(config, "architectures", None) or []) or "no architecture named"
            raise ModelLoadError(
                f"{source!r} is a {config.model_type!r} checkpoint ({found}), not a CLIP-family model; "
                f"load_model reads the transformers model types {', '.join(supported_model_types())}"
                + (f". {NOT_READ[config.model_type]}" if config.model_type in NOT_READ else ""))
        model = AutoModel.from_pretrained(source, dtype=dtype, local_files_only=local_only)
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        with open(cached_file(source, "preprocessor_config.json", local_files_only=local_only)) as f:
            return model, tokenizer, json.load(f), family
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
    cached = sorted(r.repo_id for r in repos
                    if r.repo_type == "model" and any(k in r.repo_id.lower() for k in ("clip", "siglip")))
    return [*PACKAGED_MODELS, *cached]


@lru_cache(maxsize=64)
def model_family(name: str) -> str | None:
    """The family of a model this machine holds, read from its config alone (no weights loaded),
    e.g. ``"SigLIP"``; None where its config is not here or names no family."""
    from transformers.utils import cached_file

    source = resolve_model_path(name)
    if is_open_clip_folder(source):
        return "CLIP, OpenCLIP"
    try:
        path = cached_file(source, "config.json", local_files_only=True)
        with open(path) as f:
            family = family_of(json.load(f).get("model_type", ""))
    except (OSError, ValueError):
        return None
    return family.name if family else None


def model_label(name: str) -> str:
    """A model's name for forms, with its family where it is known: ``"shapes-siglip (SigLIP)"``."""
    family = model_family(name)
    return f"{name} ({family})" if family else name


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
            f"{name_or_path!r} is not a CLIP-family checkpoint folder (it needs config.json, model weights, "
            f"tokenizer files and preprocessor_config.json, as written by "
            f"save_pretrained of the model and its processor): {_one_line(error)}"
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
