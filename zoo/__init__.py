"""FiftyOne remote zoo source: ``foz.register_zoo_model_source(<repo url>)`` finds ``manifest.json``
here and exposes one zoo model per localizer (``clip-zeroshot-sliding-window``, ...), plus
``clip-zeroshot-embeddings``, which embeds images, patches and prompts for the brain's similarity
indexes and the App's text search.

    model = foz.load_zoo_model("clip-zeroshot-sliding-window", prompts=["a fluffy cat"],
                               clip_model="openai/clip-vit-base-patch32")
    dataset.apply_model(model, label_field="clip")
    fob.compute_similarity(dataset, patches_field="candidates", model="clip-zeroshot-embeddings",
                           model_kwargs={"clip_model": "openai/clip-vit-base-patch32"}, brain_key="objects")

FiftyOne imports this file on its own, so it only reaches into the installed package
(``pip install`` this repository); CLIP weights come from ``clip_model`` when the model loads.
"""

import json
import os

PREFIX = "clip-zeroshot-"
EMBEDDINGS = PREFIX + "embeddings"


def download_model(model_name, model_path):
    """Nothing to download until ``clip_model`` is known: record what this zoo model is."""
    fz = _package()
    os.makedirs(os.path.dirname(model_path), exist_ok=True)
    with open(model_path, "w") as file:
        json.dump({"model": model_name, "package": fz.__name__}, file)


def load_model(model_name, model_path, prompts=None, clip_model=None, device=None, **options):
    """``fz.zero_shot_model`` for ``prompts`` with this zoo model's method; for ``clip-zeroshot-embeddings``,
    the embedding model (``ClipEmbeddingsModel``: no prompts; ``prompt_templates``, ``batch_size``).

    Args:
        prompts: what to find, a list or one text separated by commas or new lines.
        clip_model: a hub id, a local CLIP folder or a packaged name (default: the package's).
        device: ``"cuda"``, ``"cpu"`` or None (the GPU when there is one).
        **options: ``LocalizeOptions`` fields (``confidence_thresh``, ``batch_size``, ...).
    """
    fz = _package()
    from fiftyone_clip_zeroshot.core.models.model import DEFAULT_MODEL
    from fiftyone_clip_zeroshot.core.options import parse_prompts

    if model_name.split("@")[0] == EMBEDDINGS:
        from fiftyone_clip_zeroshot.labeling.fo_models.embeddings import ClipEmbeddingsModel

        return ClipEmbeddingsModel(clip_model or DEFAULT_MODEL, device=device, **options)

    if not prompts:
        raise ValueError(f"{model_name} needs prompts, e.g. foz.load_zoo_model({model_name!r}, prompts=['a cat'])")
    return fz.zero_shot_model(parse_prompts(prompts), method=_method(model_name),
                                model=clip_model or DEFAULT_MODEL, device=device, **options)


def _method(model_name):
    return model_name.split("@")[0].removeprefix(PREFIX).replace("-", "_")


def _package():
    try:
        import fiftyone_clip_zeroshot
    except ImportError as error:
        raise ImportError("the clip-zeroshot zoo models need the fiftyone-clip-zeroshot package: "
                          "pip install <this repository>") from error
    return fiftyone_clip_zeroshot
