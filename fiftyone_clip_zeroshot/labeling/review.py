"""Moved to ``fiftyone_clip_zeroshot.labeling.curation.decisions``;
this import path is kept for the 0.1 releases only (docs/development.md)."""

from fiftyone_clip_zeroshot.labeling.curation.decisions import *  # noqa: F403
