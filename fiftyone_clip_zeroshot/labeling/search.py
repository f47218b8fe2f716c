"""Moved to ``fiftyone_clip_zeroshot.labeling.object_search.index``;
this import path is kept for the 0.1 releases only (docs/development.md)."""

from fiftyone_clip_zeroshot.labeling.object_search.index import *  # noqa: F403
