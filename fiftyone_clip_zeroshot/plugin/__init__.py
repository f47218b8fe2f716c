"""FiftyOne plugin entry point (``py_entry`` in fiftyone.yml).

FiftyOne loads this file under a synthetic module name, so the package is imported absolutely;
when the repository sits in the plugins dir without being pip-installed, its root is put on
``sys.path`` first.
"""

import sys
from pathlib import Path

try:
    import fiftyone_clip_zeroshot  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fiftyone_clip_zeroshot import app  # noqa: E402


def register(plugin) -> None:
    app.register(plugin)
