"""OpenCLIP checkpoints (``open_clip_config.json`` plus weights, as LAION and DataComp publish
them), read by ``open_clip`` and carried into transformers' ``CLIPModel``.

OpenCLIP's ViT CLIP and transformers' ``CLIPModel`` are the same network under other names, so a
checkpoint read by open_clip becomes a ``CLIPModel`` by renaming (``WEIGHT_NAMES``; each block's
packed query, key and value projection split in three). Every localizer then reads it like any
CLIP, the dense one included. The copy is checked at load: its image and text embeddings must
equal open_clip's own, else the checkpoint is refused with what differs. Towers of other kinds
(timm or Hugging Face towers, attention pooling, CoCa) are refused by name.

open_clip is an optional extra: ``pip install fiftyone-clip-zeroshot[open-clip]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from fiftyone_clip_zeroshot.core.errors import ModelLoadError

CONFIG_FILE = "open_clip_config.json"
CHECK_TOLERANCE = 1e-3  # cosine distance between open_clip's embeddings and the copy's, at load

# transformers name <- open_clip name: within every block of both towers (_TOWERS), then whole-model weights.
_BLOCK = {
    "layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
}
_TOWERS = {"text_model.encoder.layers": "transformer.resblocks",
           "vision_model.encoder.layers": "visual.transformer.resblocks"}
WEIGHT_NAMES = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
    "vision_model.embeddings.class_embedding": "visual.class_embedding",
    "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
    "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
    "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
    "vision_model.post_layernorm.weight": "visual.ln_post.weight",
    "vision_model.post_layernorm.bias": "visual.ln_post.bias",
    "logit_scale": "logit_scale",
}
TRANSPOSED = {"text_projection.weight": "text_projection", "visual_projection.weight": "visual.proj"}


def is_open_clip_folder(path: str | Path) -> bool:
    """Whether ``path`` is a local folder in OpenCLIP's layout (and not a transformers one)."""
    folder = Path(path)
    return (folder / CONFIG_FILE).is_file() and not (folder / "config.json").is_file()


def clip_config(open_clip_config: dict[str, Any], eos_token_id: int) -> Any:
    """The ``transformers.CLIPConfig`` of an OpenCLIP ``model_cfg``."""
    from transformers import CLIPConfig

    model, vision, text = open_clip_config, open_clip_config["vision_cfg"], open_clip_config["text_cfg"]
    act = "quick_gelu" if model.get("quick_gelu") else "gelu"
    vision_width, text_width = vision["width"], text["width"]
    return CLIPConfig(
        projection_dim=model["embed_dim"],
        vision_config=dict(
            hidden_size=vision_width, num_hidden_layers=vision["layers"], image_size=vision["image_size"],
            patch_size=vision["patch_size"], num_attention_heads=vision_width // vision.get("head_width", 64),
            intermediate_size=int(vision_width * vision.get("mlp_ratio", 4.0)), hidden_act=act),
        text_config=dict(
            vocab_size=text["vocab_size"], hidden_size=text_width, num_hidden_layers=text["layers"],
            num_attention_heads=text["heads"], intermediate_size=int(text_width * text.get("mlp_ratio", 4.0)),
            max_position_embeddings=text["context_length"], hidden_act=act, eos_token_id=eos_token_id),
    )


def weight_names(layers: dict[str, int]) -> dict[str, str]:
    """Every transformers weight name -> its open_clip name (q/k/v: the packed one), for towers of
    ``layers`` blocks (``{"text_model.encoder.layers": 12, ...}``)."""
    names = {**WEIGHT_NAMES, **TRANSPOSED}
    for hf_tower, oc_tower in _TOWERS.items():
        for i in range(layers[hf_tower]):
            for hf, oc in _BLOCK.items():
                for kind in ("weight", "bias"):
                    names[f"{hf_tower}.{i}.{hf}.{kind}"] = f"{oc_tower}.{i}.{oc}.{kind}"
            for part in ("q", "k", "v"):
                for kind in ("weight", "bias"):
                    names[f"{hf_tower}.{i}.self_attn.{part}_proj.{kind}"] = f"{oc_tower}.{i}.attn.in_proj_{kind}"
    return names


def to_transformers(state: dict[str, torch.Tensor], layers: dict[str, int]) -> dict[str, torch.Tensor]:
    """An open_clip ViT CLIP's state dict under transformers' ``CLIPModel`` names; a weight it
    cannot carry (a sigmoid model's ``logit_bias``) is a ``ModelLoadError`` naming it, never dropped."""
    unmapped = sorted(set(state) - set(weight_names(layers).values()))
    if unmapped:
        sigmoid = " (a sigmoid-trained, SigLIP-style model: convert it to a transformers SiglipModel)" \
            if "logit_bias" in unmapped else ""
        raise ModelLoadError(f"this OpenCLIP checkpoint has weights that load_model does not carry into a CLIP: "
                             f"{', '.join(unmapped[:5])}{sigmoid}")
    out = {}
    for hf, oc in weight_names(layers).items():
        tensor = state[oc]
        if hf in TRANSPOSED:
            tensor = tensor.T
        elif ".self_attn." in hf and "_proj." in hf and "out_proj" not in hf:
            tensor = tensor.chunk(3)["qkv".index(hf.split(".self_attn.")[1][0])]
        out[hf] = tensor.contiguous()
    return out


def to_open_clip(state: dict[str, torch.Tensor], layers: dict[str, int]) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPModel``'s state dict under open_clip's names (the inverse of ``to_transformers``)."""
    out: dict[str, torch.Tensor] = {}
    packed: dict[str, list[torch.Tensor]] = {}
    for hf, oc in weight_names(layers).items():
        tensor = state[hf]
        if hf in TRANSPOSED:
            out[oc] = tensor.T.contiguous()
        elif oc.endswith(("in_proj_weight", "in_proj_bias")):
            packed.setdefault(oc, []).append(tensor)  # q, k, v in that order (weight_names' order)
        else:
            out[oc] = tensor
    out.update({oc: torch.cat(parts) for oc, parts in packed.items()})
    return out


def tower_layers(config: Any) -> dict[str, int]:
    """Blocks per tower of a ``CLIPConfig``, as ``weight_names`` takes them."""
    return {"text_model.encoder.layers": config.text_config.num_hidden_layers,
            "vision_model.encoder.layers": config.vision_config.num_hidden_layers}


class OpenClipTokenizer:
    """open_clip's tokenizer behind the call ``ClipModel`` makes of a transformers tokenizer:
    every text padded to the context length (later positions never reach the pooled end-of-text
    token, which a causal text tower reads). Lists (no ``return_tensors``) hold each text's whole
    ids, untruncated where open_clip's BPE tokenizer can say them, so that a long prompt is noticed."""

    def __init__(self, tokenize: Callable[[list[str]], torch.Tensor], context_length: int):
        self.tokenize = tokenize
        self.model_max_length = context_length

    def __call__(self, texts: Sequence[str], return_tensors: str | None = None, **_: Any) -> dict[str, Any]:
        if return_tensors is None and (whole := self._whole_ids(texts)) is not None:
            return {"input_ids": whole, "attention_mask": [[1] * len(i) for i in whole]}
        ids = self.tokenize(list(texts))
        tokens = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        return tokens if return_tensors == "pt" else {k: v.tolist() for k, v in tokens.items()}

    def _whole_ids(self, texts: Sequence[str]) -> list[list[int]] | None:
        """Each text's ids before truncation: from open_clip's BPE tokenizer (with its start and
        end tokens) or the Hugging Face tokenizer an ``HFTokenizer`` wraps; None for another kind."""
        if hasattr(self.tokenize, "encode") and hasattr(self.tokenize, "sot_token_id"):
            start, end = [self.tokenize.sot_token_id], [self.tokenize.eot_token_id]
            return [start + self.tokenize.encode(text) + end for text in texts]
        wrapped = getattr(self.tokenize, "tokenizer", None)
        return list(wrapped(list(texts))["input_ids"]) if callable(wrapped) else None


def read_open_clip(source: str, dtype: torch.dtype, local_only: bool = True
                   ) -> tuple[Any, OpenClipTokenizer, dict]:
    """A ``CLIPModel`` carrying an OpenCLIP checkpoint (a local folder, or ``hf-hub:<id>``), its
    tokenizer, and its preprocessing as a transformers preprocessor config; ``local_only``: a hub
    checkpoint from the local Hugging Face cache only."""
    try:
        import open_clip
    except ImportError:
        raise ModelLoadError(f"{source!r} is an OpenCLIP checkpoint, and reading it needs open_clip: "
                            "pip install 'fiftyone-clip-zeroshot[open-clip]'") from None
    from transformers import CLIPModel

    if source.startswith("hf-hub:"):  # open_clip reads hub files itself: through the cache when offline
        folder = _hub_folder(source.removeprefix("hf-hub:"), local_only)
    else:
        folder = Path(source)
    name = f"local-dir:{folder}"
    try:
        model, _, _ = open_clip.create_model_and_transforms(name)
        tokenizer = open_clip.get_tokenizer(name)
    except (RuntimeError, ValueError, KeyError, OSError) as error:  # open_clip's own, whatever the cause
        raise ModelLoadError(f"open_clip could not read the OpenCLIP checkpoint {source!r}: "
                             f"{' '.join(str(error).split())}") from error
    with open(folder / CONFIG_FILE) as f:
        config = json.load(f)
    _check_kind(model, config)
    context = int(config["model_cfg"]["text_cfg"]["context_length"])
    probe = tokenizer(["a photo"])[0]
    eos = int(probe.max())  # open_clip pools at the highest id, its end-of-text token
    clip = CLIPModel(clip_config(config["model_cfg"], eos))
    clip.load_state_dict(to_transformers(model.state_dict(), tower_layers(clip.config)))
    clip.eval()
    model.eval()
    _check_copy(model, clip, tokenizer(["a photo of a cat"]))
    preprocess = config.get("preprocess_cfg", {})
    size = config["model_cfg"]["vision_cfg"]["image_size"]
    processor = {"crop_size": size, **{k: preprocess[k] for k in ("image_mean", "image_std") if k in preprocess}}
    return clip.to(dtype), OpenClipTokenizer(tokenizer, context), processor


def _hub_folder(repo_id: str, local_only: bool) -> Path:
    """The local folder of a hub OpenCLIP repository (downloaded first unless ``local_only``)."""
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, local_files_only=local_only))


def _check_kind(model: torch.nn.Module, config: dict[str, Any]) -> None:
    import open_clip
    from open_clip.transformer import VisionTransformer

    vision, text = config["model_cfg"].get("vision_cfg", {}), config["model_cfg"].get("text_cfg", {})
    other = [what for what, found in (
        (f"{type(model).__name__} (not open_clip.CLIP)", type(model) is not open_clip.CLIP),
        (f"a {type(getattr(model, 'visual', None)).__name__} image tower",
         not isinstance(getattr(model, "visual", None), VisionTransformer)),
        ("a timm image tower", bool(vision.get("timm_model_name"))),
        ("a Hugging Face text tower", bool(text.get("hf_model_name"))),
        ("attention pooling", bool(vision.get("attentional_pool")) or vision.get("pool_type", "tok") != "tok"),
        ("layer scale", vision.get("ls_init_value") is not None or text.get("ls_init_value") is not None),
    ) if found]
    if other:
        raise ModelLoadError(f"this OpenCLIP checkpoint has {', '.join(other)}; load_model carries OpenCLIP's ViT "
                            "CLIP architecture (LAION, DataComp, OpenAI releases), not this one")


@torch.inference_mode()
def _check_copy(model: torch.nn.Module, clip: Any, tokens: torch.Tensor) -> None:
    size = clip.config.vision_config.image_size
    pixels = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    pairs = {
        "image": (model.encode_image(pixels), clip.get_image_features(pixel_values=pixels).pooler_output),
        "text": (model.encode_text(tokens),
                 clip.get_text_features(input_ids=tokens, attention_mask=torch.ones_like(tokens)).pooler_output),
    }
    for what, (theirs, ours) in pairs.items():
        distance = 1 - float(torch.nn.functional.cosine_similarity(theirs.float(), ours.float()).min())
        if distance > CHECK_TOLERANCE:
            raise ModelLoadError(f"this OpenCLIP checkpoint's {what} embeddings differ from open_clip's own once "
                                 f"carried into transformers (cosine distance {distance:.2g}); its architecture has "
                                 "something load_model does not carry")
