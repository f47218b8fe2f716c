"""The base of every error this package raises on purpose, so callers can catch them all at once."""


class ClipZeroShotError(Exception):
    """A clear, expected failure (bad options, missing weights, unreadable image, wrong target),
    as opposed to a bug; the message says what to do."""


class OptionsError(ClipZeroShotError, ValueError):
    """An option is out of range; raised before any work starts."""


class ModelLoadError(ClipZeroShotError, RuntimeError):
    """The weights could not be found or are not a checkpoint of a CLIP family."""
