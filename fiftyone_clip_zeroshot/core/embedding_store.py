"""Embed once, prompt many: an on-disk store of every image-encoder output the localizers compute.

Nearly all of a run's encoder work (windows, context crops, occluded contexts, tiles' patch
tokens, candidate crops) does not depend on the prompts, so a rerun with new prompts on images
already seen reads it back instead of encoding it again. One file holds one image's rows for one
model: ``<root>/v<STORE_VERSION>/<model fingerprint>/<ab>/<image digest>.npz``, with rows grouped
by kind (``"pooled"`` embeddings, ``"tokens:naclip"`` patch tokens, ...) and each row keyed by the integer
geometry that cut its crop from the decoded pixels. So an entry is valid exactly when its key
matches: other weights, dtype, input size or normalisation change the fingerprint; an edited
image changes the digest of its decoded pixels; an option that moves a crop changes its key.

Files are written whole, to a temporary name, then renamed over the old one (atomic on POSIX and
on shared folders), so two processes writing the same image never mix their bytes and an
interrupted write leaves no entry; each file carries a checksum of its rows, so a damaged one is
recomputed and replaced. A store that cannot be written (read-only, disk full) warns once and the
run goes on computing (writes are tried again ``WRITE_PAUSE_S`` later). Past ``max_bytes`` the least
recently used files go (``trim``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import threading
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "FIFTYONE_CLIP_ZEROSHOT_CACHE_DIR"
CACHE_SIZE_ENV = "FIFTYONE_CLIP_ZEROSHOT_CACHE_GB"
STORE_VERSION = 1  # raise when what a key names changes (how crops are cut, how proposals are found)
DEFAULT_MAX_GB = 5.0  # a laptop's share: 1,000 to 2,500 photos in float32 (docs/speed.md, "Second prompt")
WRITE_PAUSE_S = 600  # after a failed write (read-only, disk full), no write is tried for this long
TRIM_EVERY = 0.05  # trim after writing this fraction of max_bytes since the last trim
_SUFFIX = ".npz"


class StoreWarning(UserWarning):
    """The embedding store could not be read or written; the run goes on computing."""


def default_cache_dir() -> Path:
    """``$FIFTYONE_CLIP_ZEROSHOT_CACHE_DIR``, else ``$XDG_CACHE_HOME/fiftyone-clip-zeroshot/embeddings``
    (``~/.cache`` without it)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fiftyone-clip-zeroshot" / "embeddings"


def default_max_bytes() -> int:
    """The size cap: ``$FIFTYONE_CLIP_ZEROSHOT_CACHE_GB`` gigabytes, else ``DEFAULT_MAX_GB``."""
    return int(float(os.environ.get(CACHE_SIZE_ENV) or DEFAULT_MAX_GB) * 1e9)


def pixels_digest(pixels: torch.Tensor) -> str:
    """The content key of a decoded uint8 ``(3, H, W)`` image: a digest of its shape and pixels."""
    array = np.ascontiguousarray(pixels.detach().cpu().numpy())
    digest = hashlib.blake2b(str(array.shape).encode(), digest_size=16)
    digest.update(array.data)
    return digest.hexdigest()


@dataclass
class Counts:
    """Crops (windows, contexts, tiles) one image's run read from the store and encoded."""

    stored: int = 0
    computed: int = 0

    def __iadd__(self, other: Counts) -> Counts:
        self.stored += other.stored
        self.computed += other.computed
        return self


class EmbeddingStore:
    """A folder of per-image embedding files (see the module's docstring)."""

    def __init__(self, root: str | Path, max_bytes: int | None = None):
        self.root = Path(root).expanduser()
        self.max_bytes = default_max_bytes() if max_bytes is None else int(max_bytes)
        self.paused_until = 0.0  # time.monotonic() before which no write is tried (after a failed one)
        self._written = 0
        self._lock = threading.Lock()

    def entry(self, model_fingerprint: str, image_digest: str, dtype: torch.dtype) -> ImageEmbeddings:
        """The rows stored for one image under one model (read lazily, written by ``flush``)."""
        path = self.root / f"v{STORE_VERSION}" / model_fingerprint / image_digest[:2] / f"{image_digest}{_SUFFIX}"
        return ImageEmbeddings(self, path, np.float16 if dtype == torch.float16 else np.float32)

    def read(self, path: Path, warn: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """An entry's rows by kind; {} when there is none or it cannot be read, or (with a warning,
        if ``warn``) when it is damaged."""
        try:
            with np.load(path) as data:
                entry = _unpack(data)
        except (FileNotFoundError, NotADirectoryError, PermissionError):  # writing it will say why, if it fails
            return {}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            if warn:
                warnings.warn(f"damaged embedding store entry {path} ({error}); its crops are encoded again and "
                              "the entry is replaced", StoreWarning, stacklevel=2)
            return {}
        with contextlib.suppress(OSError):  # least recently used goes first when trimmed (a read-only store: as is)
            os.utime(path)
        return entry

    def write(self, path: Path, entry: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        """Write ``entry`` whole under a temporary name, then rename it into place; on failure
        (read-only, disk full) warn, and try no write for ``WRITE_PAUSE_S``."""
        if time.monotonic() < self.paused_until:
            return
        buffer = io.BytesIO()
        np.savez(buffer, **_pack(entry))
        try:
            _write_whole(path, buffer.getbuffer())
        except OSError as error:
            with self._lock:
                warn, self.paused_until = time.monotonic() >= self.paused_until, time.monotonic() + WRITE_PAUSE_S
            if warn:  # images of a batch may fail together: one warning
                warnings.warn(f"cannot write the embedding store {self.root} ({error}); runs go on computing "
                              f"what it lacks, and writing is retried in {WRITE_PAUSE_S // 60} minutes (cache=False "
                              "skips the store)", StoreWarning, stacklevel=2)
            return
        with self._lock:
            self._written += buffer.getbuffer().nbytes
            due = self._written >= TRIM_EVERY * self.max_bytes
            if due:
                self._written = 0
        if due:
            self.trim()

    def has(self, model_fingerprint: str, image_digest: str) -> bool:
        """Whether the store holds rows of this image under this model."""
        return self.entry(model_fingerprint, image_digest, torch.float32).path.exists()

    def note(self, name: str, fields: dict[str, Any]) -> None:
        """Remember small facts by name (which image a file decoded to, which weights a model name
        loaded), for what reads the store without decoding or loading: the App's "embedded" count."""
        with contextlib.suppress(OSError):  # a hint only: writing the rows says what is wrong with the store
            _write_whole(self.root / f"v{STORE_VERSION}" / "notes" / _name_digest(name),
                         json.dumps({"name": name, **fields}).encode())

    def noted(self, name: str) -> dict[str, Any] | None:
        """What ``note`` remembered under ``name``, or None."""
        try:
            fields = json.loads((self.root / f"v{STORE_VERSION}" / "notes" / _name_digest(name)).read_text())
        except (OSError, ValueError):
            return None
        return fields if fields.get("name") == name else None

    def note_file(self, path: str, image_digest: str) -> None:
        """Remember which decoded image the file at ``path`` (as it is now) is."""
        with contextlib.suppress(OSError):
            stat = os.stat(path)
            self.note(f"file:{path}", {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "digest": image_digest})

    def file_digest(self, path: str) -> str | None:
        """The image digest ``note_file`` remembered for ``path``, if the file has not changed since."""
        fields = self.noted(f"file:{path}")
        try:
            stat = os.stat(path)
        except OSError:
            return None
        if fields and (fields["size"], fields["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            return fields["digest"]
        return None

    def embedded(self, paths: list[str], model_name: str) -> int:
        """How many of the image files at ``paths`` the store holds rows of under the model a run
        last loaded by ``model_name`` (0 when none did)."""
        model = self.noted(f"model:{model_name}")
        if model is None:
            return 0
        digests = (self.file_digest(path) for path in paths)
        return sum(digest is not None and self.has(model["fingerprint"], digest) for digest in digests)

    def files(self) -> list[os.DirEntry]:
        """Every entry file under the root."""
        found: list[os.DirEntry] = []
        stack = [self.root]
        while stack:
            try:
                with os.scandir(stack.pop()) as entries:
                    for item in entries:
                        if item.is_dir(follow_symlinks=False):
                            stack.append(Path(item.path))
                        elif item.name.endswith(_SUFFIX) and not item.name.startswith("."):
                            found.append(item)
            except FileNotFoundError:
                continue
        return found

    def trim(self, max_bytes: int | None = None) -> int:
        """Delete least recently used entries until the store holds at most 90 % of ``max_bytes``
        (default: the store's cap) once it is over it; returns the bytes freed."""
        cap = self.max_bytes if max_bytes is None else max_bytes
        sized = [(item.stat().st_mtime, item.stat().st_size, item.path) for item in self.files()]
        total = sum(size for _, size, _ in sized)
        if total <= cap:
            return 0
        freed = 0
        for _, size, path in sorted(sized):
            if total - freed <= 0.9 * cap:
                break
            try:
                os.unlink(path)
                freed += size
            except FileNotFoundError:  # another process trimmed it first
                continue
            except OSError:
                break
        logger.info("embedding store %s trimmed by %.1f MB", self.root, freed / 1e6)
        return freed


@dataclass
class ImageEmbeddings:
    """One image's stored rows under one model: ``lookup`` what is there, ``add`` what was
    encoded, ``flush`` the new rows to disk (merged with whatever another process wrote since)."""

    store: EmbeddingStore
    path: Path
    dtype: type
    rows: dict[str, dict[bytes, np.ndarray]] | None = None
    new: dict[str, dict[bytes, np.ndarray]] = field(default_factory=dict)

    def lookup(self, kind: str, keys: np.ndarray) -> tuple[list[np.ndarray | None], np.ndarray]:
        """Each key's stored row (None where missing), and the indices of the missing keys."""
        if self.rows is None:
            self.rows = {k: _by_key(*kr) for k, kr in self.store.read(self.path).items()}
        keys = _as_keys(keys)
        kind = _group(kind, keys)
        have = {**self.rows.get(kind, {}), **self.new.get(kind, {})}
        found = [have.get(key.tobytes()) for key in keys]
        return found, np.array([i for i, row in enumerate(found) if row is None], np.int64)

    def add(self, kind: str, keys: np.ndarray, rows: torch.Tensor | np.ndarray) -> None:
        """Remember new rows, to be written by ``flush``: encoder outputs (a tensor) in the store's
        dtype, numpy arrays as they are."""
        keys = _as_keys(keys)
        values = rows.detach().cpu().numpy().astype(self.dtype) if isinstance(rows, torch.Tensor) else rows
        self.new.setdefault(_group(kind, keys), {}).update(zip((k.tobytes() for k in keys), values))

    def array(self, name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """A per-image array that needs no weights but costs time (the region proposals), stored
        whole under ``name``: read back, or computed and added."""
        stored = self.lookup(name, np.zeros((1, 1)))[0][0]
        if stored is not None:
            return stored
        value = np.asarray(compute())
        self.add(name, np.zeros((1, 1)), value[None])
        return value

    def flush(self) -> None:
        """Write the new rows, merged with the entry as it is on disk now."""
        if not self.new or time.monotonic() < self.store.paused_until:
            return
        merged = {k: _by_key(*kr) for k, kr in self.store.read(self.path, warn=False).items()}  # warned at lookup
        for kind, rows in self.new.items():
            merged.setdefault(kind, {}).update(rows)
        self.store.write(self.path, {kind: _stacked(rows) for kind, rows in merged.items()})
        self.rows, self.new = merged, {}


def _write_whole(path: Path, data: bytes | memoryview) -> None:
    """``data`` into ``path`` under a temporary name, then renamed into place: a reader sees the old
    file or the new one, whole; an interrupted or failed write leaves no temporary file."""
    temp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "wb") as f:
            f.write(data)
        os.replace(temp, path)
    finally:  # (a renamed one is gone already)
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)


def _name_digest(name: str) -> str:
    digest = hashlib.blake2b(name.encode(), digest_size=12).hexdigest()
    return f"{digest[:2]}/{digest}.json"


def _group(kind: str, keys: np.ndarray) -> str:
    """Rows are filed by kind and key width (a window's key is shorter than an occluded one's)."""
    return f"{kind}/{keys.shape[1]}"


def _as_keys(keys: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(keys, np.int64).reshape(len(keys), -1))


def _by_key(keys: np.ndarray, rows: np.ndarray) -> dict[bytes, np.ndarray]:
    return dict(zip((k.tobytes() for k in _as_keys(keys)), rows))


def _stacked(rows: dict[bytes, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.stack([np.frombuffer(k, np.int64) for k in rows])
    return keys, np.stack(list(rows.values()))


def _checksum(arrays: dict[str, np.ndarray]) -> np.ndarray:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(str(arrays[name].dtype).encode() + str(arrays[name].shape).encode())
        digest.update(np.ascontiguousarray(arrays[name]).data)
    return np.frombuffer(digest.digest(), np.uint8)


def _pack(entry: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    arrays = {}
    for index, (kind, (keys, rows)) in enumerate(sorted(entry.items())):
        arrays[f"kind{index}"] = np.frombuffer(kind.encode(), np.uint8)
        arrays[f"keys{index}"], arrays[f"rows{index}"] = keys, rows
    return {**arrays, "checksum": _checksum(arrays)}


def _unpack(data: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    arrays = {name: data[name] for name in data.files if name != "checksum"}
    if not np.array_equal(data["checksum"], _checksum(arrays)):
        raise ValueError("checksum mismatch")
    count = sum(name.startswith("kind") for name in arrays)
    return {arrays[f"kind{i}"].tobytes().decode(): (arrays[f"keys{i}"], arrays[f"rows{i}"]) for i in range(count)}


_STORES: dict[tuple[str, int | None], EmbeddingStore] = {}


def open_store(cache: bool | str | Path | EmbeddingStore | None) -> EmbeddingStore | None:
    """The store a run's ``cache`` option names: True (the default folder), a folder or
    ``file://`` URI, a store, or None/False (no store). One store object per folder per process."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, EmbeddingStore):
        return cache
    root = default_cache_dir() if cache is True else _folder(str(cache))
    key = (str(root.resolve()), default_max_bytes())
    if key not in _STORES:
        _STORES[key] = EmbeddingStore(root)
    return _STORES[key]


def _folder(cache: str) -> Path:
    if "://" not in cache:
        return Path(cache)
    scheme, _, rest = cache.partition("://")
    if scheme != "file":
        raise ValueError(f"cache={cache!r}: the embedding store takes a folder (local or a shared mount) or a "
                         f"file:// URI; {scheme}:// is not supported")
    return Path(rest)


def cache_info(cache: bool | str | Path = True) -> dict[str, Any]:
    """Where the store is, its cap, and its files and bytes per model fingerprint."""
    store = open_store(cache)
    models: dict[str, dict[str, int]] = {}
    for item in store.files():
        model = Path(item.path).relative_to(store.root).parts[1]
        stats = models.setdefault(model, {"files": 0, "bytes": 0})
        stats["files"] += 1
        stats["bytes"] += item.stat().st_size
    return {"root": str(store.root), "max_bytes": store.max_bytes, "files": sum(m["files"] for m in models.values()),
            "bytes": sum(m["bytes"] for m in models.values()), "models": models}


def clear_cache(cache: bool | str | Path = True, older_than_days: float | None = None) -> int:
    """Delete the store's entries (only those unused for ``older_than_days``, if given); returns
    how many files went."""
    store = open_store(cache)
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    removed = 0
    for item in store.files():
        if cutoff is None or item.stat().st_mtime < cutoff:
            try:
                os.unlink(item.path)
                removed += 1
            except FileNotFoundError:
                continue
    if cutoff is None:
        shutil.rmtree(store.root / f"v{STORE_VERSION}" / "notes", ignore_errors=True)
    return removed
