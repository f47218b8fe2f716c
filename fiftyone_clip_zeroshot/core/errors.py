"""The base of every error this package raises on purpose, so callers can catch them all at once."""


class ClipZeroShotError(Exception):
    """A clear, expected failure (bad options, missing weights, unreadable image, wrong target),
    as opposed to a bug; the message says what to do."""
