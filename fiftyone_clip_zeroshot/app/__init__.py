"""What the FiftyOne App sees: the operators' forms, the panel, and the runner they share.

Imports: core, labeling
"""

from fiftyone_clip_zeroshot.app import operators
from fiftyone_clip_zeroshot.app.panel import ClipZeroShotPanel


def register(plugin) -> None:
    """Register every operator and the panel with FiftyOne (called by the plugin's entry point)."""
    operators.register(plugin)
    plugin.register(ClipZeroShotPanel)
