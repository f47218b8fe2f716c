"""Prompt ensembles: a prompt read through several templates, the CLIP paper's recipe.

``prompt_templates`` is a list of ``"{}"`` templates or the name of a set. A prompt's text
embedding is then the normalised mean of its templates' normalised embeddings
(``ClipModel.encode_text``). The prompt fills the ``{}``, so with templates a prompt is a class
name ("cat"), not a caption ("a photo of a cat"). Negative prompts are read as they are.

The named sets ``openai`` (the CLIP paper's 80 ImageNet templates) and ``simple`` (its 7-template
selection) come from ``open_clip.zero_shot_metadata`` (``pip install fiftyone-clip-zeroshot[open-clip]``);
``photo``, a short set of our own, needs nothing.
"""

from __future__ import annotations

import importlib.util
import string
from collections.abc import Sequence

from fiftyone_clip_zeroshot.core.errors import OptionsError

OWN_SETS: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of a {}.", "a photo of the {}.", "a close-up photo of a {}.", "a cropped photo of a {}.",
              "a photo of a small {}.", "a photo of a large {}."),
}
OPEN_CLIP_SETS = {"openai": "OPENAI_IMAGENET_TEMPLATES", "simple": "SIMPLE_IMAGENET_TEMPLATES"}


def template_set_names() -> list[str]:
    """The named sets: ours, then open_clip's (usable when it is installed)."""
    return [*OWN_SETS, *OPEN_CLIP_SETS]


def available_template_sets() -> list[str]:
    """The named sets this installation can read (open_clip's only where it is installed)."""
    return [*OWN_SETS, *(OPEN_CLIP_SETS if importlib.util.find_spec("open_clip") else ())]


def resolve_templates(templates: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """The templates a ``prompt_templates`` option names, checked; None: prompts read as typed."""
    if templates is None:
        return None
    if isinstance(templates, str):
        return _named_set(templates)
    templates = tuple(templates)
    bad = [t for t in templates if not _one_blank(t)]
    if not templates or bad:
        raise OptionsError(f"prompt_templates must be a set name ({', '.join(template_set_names())}) or a non-empty "
                           f"list of templates, each with one '{{}}' where the prompt goes; got {bad or templates!r}")
    return templates


def _one_blank(template: object) -> bool:
    """Whether ``template.format(prompt)`` puts the prompt in exactly one place and asks nothing
    else (``{{`` and ``}}`` are literal braces)."""
    if not isinstance(template, str):
        return False
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError:  # an unmatched brace
        return False
    return fields == [("", "", None)]


def _named_set(name: str) -> tuple[str, ...]:
    if name in OWN_SETS:
        return OWN_SETS[name]
    if name not in OPEN_CLIP_SETS:
        raise OptionsError(f"unknown prompt_templates set {name!r}; sets: {', '.join(template_set_names())}, "
                           "or pass a list of '{}' templates")
    try:
        from open_clip import zero_shot_metadata
    except ImportError:
        raise OptionsError(f"the {name!r} template set comes from open_clip, which is not installed: "
                           "pip install 'fiftyone-clip-zeroshot[open-clip]', or use 'photo' or your own list") from None
    return tuple(template("{}") for template in getattr(zero_shot_metadata, OPEN_CLIP_SETS[name]))
