"""The names that options are checked against, in a module that imports none of the modules that
use them: ``options`` validates with them, and the localizers and their parts read them from here
(so that neither needs the other to be understood)."""

METHODS: tuple[str, ...] = ("sliding_window", "occlusion", "proposals", "dense")  # core.localizers registers each
FILLS: tuple[str, ...] = ("mean", "black", "gray")  # what hides an occluder's pixels (core.localizers.occlusion)
ATTENTION: tuple[str, ...] = ("clearclip", "naclip")  # the dense last-block variants (localizers.patch_tokens)
PROPOSAL_SIDE = 256  # segmentation runs at this long side; boxes are scaled back to the image (core.geometry.regions)
