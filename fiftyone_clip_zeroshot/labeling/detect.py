"""Moved to ``fiftyone_clip_zeroshot.labeling.runs.detect``;
this import path is kept for the 0.1 releases only (docs/development.md)."""

from fiftyone_clip_zeroshot.labeling.runs.detect import *  # noqa: F403
