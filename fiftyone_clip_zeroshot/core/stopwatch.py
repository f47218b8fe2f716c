"""Where a run's time goes: wall seconds per named stage, summed over the process.

Stages nest; each counts only its own time (a store read inside a localization is not counted in
the localization too), so the stages of one thread add up to the time spent in them. Threads keep
their own nesting; stages of threads that run at once (decoding ahead) add up past the wall time.
``benchmarks/reprompt.py`` prints the split; a few clock reads per stage cost nothing next to it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

_TOTALS: Counter[str] = Counter()
_LOCK = threading.Lock()
_LOCAL = threading.local()


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Count the time spent in the block, less its nested stages', under ``name``."""
    stack: list[list[float]] = _LOCAL.__dict__.setdefault("stack", [])
    frame = [time.perf_counter(), 0.0]  # start, time spent in nested stages
    stack.append(frame)
    try:
        yield
    finally:
        stack.pop()
        elapsed = time.perf_counter() - frame[0]
        if stack:
            stack[-1][1] += elapsed
        with _LOCK:
            _TOTALS[name] += elapsed - frame[1]


def totals() -> dict[str, float]:
    """Seconds per stage since the last ``reset``."""
    with _LOCK:
        return dict(_TOTALS)


def reset() -> None:
    """Forget the stages counted so far."""
    with _LOCK:
        _TOTALS.clear()
