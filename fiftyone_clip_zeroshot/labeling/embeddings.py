"""Moved to ``fiftyone_clip_zeroshot.labeling.fo_models.embeddings``;
this import path is kept for the 0.1 releases only (docs/development.md)."""

from fiftyone_clip_zeroshot.labeling.fo_models.embeddings import *  # noqa: F403
