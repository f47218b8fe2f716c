"""Write a transformers CLIP checkpoint in OpenCLIP's layout: ``open_clip_config.json``, the same
weights under open_clip's names (``open_clip_model.safetensors``) and its tokenizer files.

The test of the OpenCLIP path: a packaged tiny CLIP, converted, must load through open_clip and
embed as the transformers original does (``tests/test_families.py``).

    python scripts/convert_to_open_clip.py shapes-world /tmp/shapes-world-open-clip
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import save_file
from transformers import CLIPModel

from fiftyone_clip_zeroshot.core.models.model import resolve_model_path
from fiftyone_clip_zeroshot.core.models.openclip import CONFIG_FILE, to_open_clip, tower_layers

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")


def convert(source: str, out: Path) -> None:
    """Write the CLIP checkpoint ``source`` (a packaged name or folder) to ``out`` in OpenCLIP's layout."""
    folder = Path(resolve_model_path(source))
    model = CLIPModel.from_pretrained(folder).float()
    config, vision, text = model.config, model.config.vision_config, model.config.text_config
    if vision.hidden_act != text.hidden_act or vision.hidden_act not in ("gelu", "quick_gelu"):
        raise SystemExit(f"open_clip's ViT CLIP has one activation, GELU or QuickGELU; {source} has "
                         f"{vision.hidden_act} / {text.hidden_act}")
    model_cfg = dict(
        embed_dim=config.projection_dim, quick_gelu=vision.hidden_act == "quick_gelu",
        vision_cfg=dict(image_size=vision.image_size, layers=vision.num_hidden_layers, width=vision.hidden_size,
                        head_width=vision.hidden_size // vision.num_attention_heads, patch_size=vision.patch_size,
                        mlp_ratio=vision.intermediate_size / vision.hidden_size),
        text_cfg=dict(context_length=text.max_position_embeddings, vocab_size=text.vocab_size,
                      width=text.hidden_size, heads=text.num_attention_heads, layers=text.num_hidden_layers,
                      mlp_ratio=text.intermediate_size / text.hidden_size,
                      hf_tokenizer_name=".", tokenizer_kwargs={"clean": "whitespace"}),
    )
    with open(folder / "preprocessor_config.json") as f:
        preprocess = json.load(f)
    out.mkdir(parents=True, exist_ok=True)
    (out / CONFIG_FILE).write_text(json.dumps(dict(
        model_cfg=model_cfg,
        preprocess_cfg={k: preprocess[k] for k in ("image_mean", "image_std")},
    ), indent=2))
    state = to_open_clip(model.state_dict(), tower_layers(config))
    save_file({k: v.contiguous() for k, v in state.items()}, out / "open_clip_model.safetensors")
    for name in TOKENIZER_FILES:
        if (folder / name).exists():
            shutil.copy(folder / name, out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="a packaged model name or a transformers CLIP folder")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    convert(args.source, args.out)
    print(f"wrote {args.source} in OpenCLIP's layout to {args.out}")


if __name__ == "__main__":
    main()
