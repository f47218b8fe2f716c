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
recently used files go (``trim``): when a process opens the store (at most once a minute per root),
after each ``TRIM_EVERY`` of the cap it writes, and when it exits or a run ends. The store reads,
counts and deletes only files of its own layout (entries and ``notes``), never anything else under
its root, and tolerates files that another process removes under it.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import logging
import os
import re
import threading
import time
import urllib.parse
import urllib.request
import uuid
import warnings
import weakref
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fiftyone_clip_zeroshot.core.errors import ClipZeroShotError, OptionsError
from fiftyone_clip_zeroshot.core.stopwatch import stage

logger = logging.getLogger(__name__)

CACHE_DIR_ENV = "FIFTYONE_CLIP_ZEROSHOT_CACHE_DIR"
CACHE_SIZE_ENV = "FIFTYONE_CLIP_ZEROSHOT_CACHE_GB"
STORE_VERSION = 1  # raise when what a key names changes (how crops are cut, how proposals are found)
DEFAULT_MAX_GB = 5.0  # a laptop's share: 1,000 to 2,500 photos in float32 (docs/speed.md, "Second prompt")
WRITE_PAUSE_S = 600  # after a failed write (read-only, disk full), no write is tried for this long
TRIM_EVERY = 0.05  # trim after writing this fraction of max_bytes since the last trim
TRIM_ON_OPEN_S = 60  # a store opened in a process trims if no process has for this long (marker file)
_SUFFIX = ".npz"
_HEX = re.compile(r"[0-9a-f]+")
_ENTRY_NAME = re.compile(r"([0-9a-f]{2})[0-9a-f]{30}\.npz")  # a 16-byte pixels digest, filed by its first byte
_NOTE_NAME = re.compile(r"([0-9a-f]{2})[0-9a-f]{22}\.json")  # a 12-byte name digest (``_name_digest``)
_NOTES = "notes"
_TRIM_MARKER = ".last-trim"


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
    """The size cap: ``$FIFTYONE_CLIP_ZEROSHOT_CACHE_GB`` gigabytes (a positive number), else ``DEFAULT_MAX_GB``."""
    text = os.environ.get(CACHE_SIZE_ENV) or str(DEFAULT_MAX_GB)
    try:
        gigabytes = float(text)
    except ValueError:
        gigabytes = float("nan")
    if not gigabytes > 0 or gigabytes == float("inf"):
        raise OptionsError(f"{CACHE_SIZE_ENV}={text!r}: the embedding store's cap is a positive number of "
                           "gigabytes, such as 5 or 0.5 (cache=False runs without a store)")
    return int(gigabytes * 1e9)


def pixels_digest(pixels: torch.Tensor) -> str:
    """The content key of a decoded uint8 ``(3, H, W)`` image: a digest of its shape and pixels,
    computed once per tensor while it is unchanged (a run asks for it at lookup and at its note)."""
    known = _DIGESTS.get(id(pixels))
    if known is not None and known[0]() is pixels and known[1] == pixels._version:
        return known[2]
    if pixels.is_meta:
        raise PixelsNeeded("an image stand-in without a digest")
    digest = _digest_of(pixels)
    _remember_digest(pixels, digest)
    return digest


def _digest_of(pixels: torch.Tensor) -> str:
    array = np.ascontiguousarray(pixels.detach().cpu().numpy())
    digest = hashlib.blake2b(str(array.shape).encode(), digest_size=16)
    digest.update(array.data)
    return digest.hexdigest()


def stand_in(image_digest: str, image_hw: tuple[int, int]) -> torch.Tensor:
    """An image the store has seen, not decoded: a ``(3, H, W)`` uint8 tensor on the ``meta``
    device (a shape, no pixels) whose ``pixels_digest`` is ``image_digest``. A run given one reads
    every crop from the store; where one is missing the scorer raises ``PixelsNeeded``."""
    pixels = torch.empty((3, *image_hw), dtype=torch.uint8, device="meta")
    _remember_digest(pixels, image_digest)
    return pixels


class PixelsNeeded(ClipZeroShotError, LookupError):
    """A stand-in image (``stand_in``) needs its pixels: the store lacks a crop of it. Decode it and run again."""


def _remember_digest(pixels: torch.Tensor, digest: str) -> None:
    with _DIGESTS_LOCK:
        if len(_DIGESTS) >= _DIGESTS_KEPT:
            del _DIGESTS[next(iter(_DIGESTS))]
        _DIGESTS[id(pixels)] = (weakref.ref(pixels), pixels._version, digest)


_DIGESTS: dict[int, tuple[weakref.ref, int, str]] = {}  # id -> (the tensor, its version, its digest)
_DIGESTS_KEPT = 64  # a few batches of images in flight
_DIGESTS_LOCK = threading.Lock()


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
        """The rows stored for one image under one model (read lazily, written by ``flush``); both
        keys are lowercase hex digests, as the store's layout (``files``) requires."""
        if not (_HEX.fullmatch(model_fingerprint) and _ENTRY_NAME.fullmatch(f"{image_digest}{_SUFFIX}")):
            raise ValueError(f"not a model fingerprint and image digest: {model_fingerprint!r}, {image_digest!r}")
        path = self.root / f"v{STORE_VERSION}" / model_fingerprint / image_digest[:2] / f"{image_digest}{_SUFFIX}"
        return ImageEmbeddings(self, path, np.float16 if dtype == torch.float16 else np.float32)

    def read(self, path: Path, warn: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """An entry's rows by kind; {} when there is none or it cannot be read, or (with a warning,
        if ``warn``) when it is damaged."""
        try:
            with stage("store read"), np.load(path) as data:
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
            self.trim_quietly()

    def has(self, model_fingerprint: str, image_digest: str) -> bool:
        """Whether the store holds rows of this image under this model."""
        return self.entry(model_fingerprint, image_digest, torch.float32).path.exists()

    def note(self, name: str, fields: dict[str, Any]) -> None:
        """Remember small facts by name (which image a file decoded to, which weights a model name
        loaded), for what reads the store without decoding or loading: the App's "embedded" count."""
        with contextlib.suppress(OSError):  # a hint only: writing the rows says what is wrong with the store
            _write_whole(self._notes / _name_digest(name),
                         json.dumps({"name": name, **fields}).encode())

    def noted(self, name: str) -> dict[str, Any] | None:
        """What ``note`` remembered under ``name``, or None."""
        try:
            fields = json.loads((self._notes / _name_digest(name)).read_text())
        except (OSError, ValueError):
            return None
        return fields if fields.get("name") == name else None

    def note_file(self, path: str, image_digest: str, image_hw: tuple[int, int] | None = None) -> None:
        """Remember which decoded image (its digest, and its height and width if given) the file at
        ``path``, as it is now, is."""
        with contextlib.suppress(OSError):
            stat = os.stat(path)
            size = {"hw": [int(image_hw[0]), int(image_hw[1])]} if image_hw else {}
            self.note(f"file:{path}", {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "digest": image_digest,
                                       **size})

    def file_note(self, path: str) -> dict[str, Any] | None:
        """What ``note_file`` remembered for ``path`` (``digest``, and ``hw`` where it was given), if
        the file has not changed since."""
        fields = self.noted(f"file:{path}")
        try:
            stat = os.stat(path)
        except OSError:
            return None
        if fields and (fields["size"], fields["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
            return fields
        return None

    def file_digest(self, path: str) -> str | None:
        """The image digest ``note_file`` remembered for ``path``, if the file has not changed since."""
        fields = self.file_note(path)
        return fields["digest"] if fields else None

    def embedded(self, paths: list[str], model_name: str) -> int:
        """How many of the image files at ``paths`` the store holds rows of under the model a run
        last loaded by ``model_name`` (0 when none did)."""
        model = self.noted(f"model:{model_name}")
        if model is None:
            return 0
        digests = (self.file_digest(path) for path in paths)
        return sum(digest is not None and self.has(model["fingerprint"], digest) for digest in digests)

    @property
    def _version_dir(self) -> Path:
        return self.root / f"v{STORE_VERSION}"

    @property
    def _notes(self) -> Path:
        return self._version_dir / _NOTES

    def files(self) -> list[tuple[str, os.stat_result]]:
        """The path and stat of every file of the store's own layout: entries
        (``v1/<fingerprint>/<ab>/<ab…>.npz``) and notes (``v1/notes/<ab>/<ab…>.json``). Nothing
        else under the root is listed; a file removed meanwhile is left out."""
        found = []
        for model in _subdirs(self._version_dir):
            if model.name != _NOTES and not _HEX.fullmatch(model.name):
                continue
            pattern = _NOTE_NAME if model.name == _NOTES else _ENTRY_NAME
            for bucket in _subdirs(Path(model.path)):
                for item in _scan(Path(bucket.path)):
                    match = pattern.fullmatch(item.name)
                    if match and match.group(1) == bucket.name:
                        with contextlib.suppress(OSError):  # another process removed it
                            if item.is_file(follow_symlinks=False):
                                found.append((item.path, item.stat(follow_symlinks=False)))
        return found

    def trim(self, max_bytes: int | None = None) -> int:
        """Delete the least recently used entries and notes until the store holds at most 90 % of
        ``max_bytes`` (default: the store's cap) once it is over it; returns the bytes freed. Files
        that another process removes meanwhile are skipped."""
        cap = self.max_bytes if max_bytes is None else max_bytes
        sized = sorted((stat.st_mtime, stat.st_size, path) for path, stat in self.files())
        total = sum(size for _, size, _ in sized)
        with self._lock:
            self._written = 0
        if total <= cap:
            return 0
        freed = 0
        for _, size, path in sized:
            if total - freed <= 0.9 * cap:
                break
            try:
                os.unlink(path)
                freed += size
            except FileNotFoundError:  # another process trimmed it first
                freed += size
            except OSError:  # read-only: nothing more can go
                break
        logger.info("embedding store %s trimmed by %.1f MB", self.root, freed / 1e6)
        return freed

    def trim_quietly(self) -> None:
        """``trim``, logging instead of raising: a store that cannot be trimmed never fails a run."""
        try:
            self.trim()
        except OSError as error:
            logger.warning("could not trim the embedding store %s: %s", self.root, error)

    def trim_if_due(self) -> None:
        """Trim unless some process did in the last ``TRIM_ON_OPEN_S`` (a marker file's time), so
        that short runs in many processes keep the cap without each scanning the store."""
        marker = self._version_dir / _TRIM_MARKER
        with contextlib.suppress(OSError):
            if time.time() - marker.stat().st_mtime < TRIM_ON_OPEN_S:
                return
        with contextlib.suppress(OSError):  # a read-only store is trimmed by whoever can write it
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()
            self.trim_quietly()

    def trim_if_written(self) -> None:
        """Trim if this process wrote to the store since its last trim (at the end of a run, at exit)."""
        if self._written:
            self.trim_quietly()


def _scan(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except OSError:  # absent, removed meanwhile, or not a folder
        return []


def _subdirs(folder: Path) -> list[os.DirEntry]:
    found = []
    for item in _scan(folder):
        with contextlib.suppress(OSError):
            if item.is_dir(follow_symlinks=False):
                found.append(item)
    return found


@dataclass
class ImageEmbeddings:
    """One image's stored rows under one model: ``lookup`` what is there, ``add`` what was
    encoded, ``flush`` the new rows to disk (merged with whatever another process wrote since)."""

    store: EmbeddingStore
    path: Path
    dtype: type
    stacks: dict[str, list[tuple[np.ndarray, np.ndarray]]] | None = None  # group -> (keys, rows) stacks read
    new: dict[str, dict[bytes, np.ndarray]] = field(default_factory=dict)
    _by_key: dict[str, dict[bytes, np.ndarray]] = field(default_factory=dict)  # group -> stored rows by key

    def lookup(self, kind: str, keys: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """The rows of ``keys`` (``(count, ...)``; those of missing keys are zeros, None when every
        key is missing), and the indices of the missing keys. Keys asked in the order they were
        stored (a run's windows, tiles, crops) are one slice of a stored stack, found without
        a lookup per key."""
        with stage("store read"):
            if self.stacks is None:
                self.stacks = _stacks_by_group(self.store.read(self.path))
            keys = _as_keys(keys)
            group = _group(kind, keys)
            if not self.new.get(group):
                for stored_keys, rows in self.stacks.get(group, ()):
                    start = _slice_start(stored_keys, keys)
                    if start is not None:
                        return rows[start:start + len(keys)], np.zeros(0, np.int64)
            if group not in self._by_key:
                self._by_key[group] = {k.tobytes(): row for keys_, rows in self.stacks.get(group, ())
                                       for k, row in zip(keys_, rows)}
            have, added = self._by_key[group], self.new.get(group, {})
            found = [added.get(key) if key in added else have.get(key) for key in (k.tobytes() for k in keys)]
            missing = np.array([i for i, row in enumerate(found) if row is None], np.int64)
            if len(missing) == len(keys):
                return None, missing
            first = next(row for row in found if row is not None)
            out = np.zeros((len(keys), *np.shape(first)), np.asarray(first).dtype)
            for i, row in enumerate(found):
                if row is not None:
                    out[i] = row
            return out, missing

    def add(self, kind: str, keys: np.ndarray, rows: torch.Tensor | np.ndarray) -> None:
        """Remember new rows, to be written by ``flush``: encoder outputs (a tensor) in the store's
        dtype, numpy arrays as they are."""
        keys = _as_keys(keys)
        values = rows.detach().cpu().numpy().astype(self.dtype) if isinstance(rows, torch.Tensor) else rows
        self.new.setdefault(_group(kind, keys), {}).update(zip((k.tobytes() for k in keys), values))

    def array(self, name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """A per-image array that needs no weights but costs time (the region proposals), stored
        whole under ``name``: read back, or computed and added."""
        stored, _ = self.lookup(name, np.zeros((1, 1)))
        if stored is not None:
            return stored[0]
        value = np.asarray(compute())
        self.add(name, np.zeros((1, 1)), value[None])
        return value

    def flush(self) -> None:
        """Write the new rows, merged with the entry as it is on disk now."""
        if not self.new or time.monotonic() < self.store.paused_until:
            return
        merged = _rows_by_group(self.store.read(self.path, warn=False))  # warned at lookup
        for kind, rows in self.new.items():
            merged.setdefault(kind, {}).update(rows)
        stacked = _stacked_by_shape(merged)
        self.store.write(self.path, stacked)
        self.stacks, self.new, self._by_key = _stacks_by_group(stacked), {}, {}


def _slice_start(stored: np.ndarray, keys: np.ndarray) -> int | None:
    """Where ``keys`` lie, in order, as consecutive rows of ``stored`` (None if they do not)."""
    if len(keys) == 0 or stored.shape[1:] != keys.shape[1:] or len(keys) > len(stored):
        return None
    for start in np.flatnonzero((stored == keys[0]).all(1)):
        if start + len(keys) <= len(stored) and np.array_equal(stored[start:start + len(keys)], keys):
            return int(start)
    return None


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


def _stacks_by_group(stored: dict[str, tuple[np.ndarray, np.ndarray]]
                     ) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """A file's stacks (one per group and row shape) listed per group, keys as ``_as_keys`` makes them."""
    groups: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for name, (keys, rows) in stored.items():
        groups.setdefault(name.partition("@")[0], []).append((_as_keys(keys), rows))
    return groups


def _rows_by_group(stored: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, dict[bytes, np.ndarray]]:
    """A file's stacks (one per group and row shape) as rows by key per group."""
    groups: dict[str, dict[bytes, np.ndarray]] = {}
    for name, (keys, rows) in stored.items():
        groups.setdefault(name.partition("@")[0], {}).update(_by_key(keys, rows))
    return groups


def _stacked_by_shape(groups: dict[str, dict[bytes, np.ndarray]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Rows by key per group as stacks, one per group and row shape (``group@8x8x64``): an option
    that changes a row's shape, such as ``dense_upscale``, also changes its key, so its rows sit
    beside the old ones."""
    stacks: dict[str, dict[bytes, np.ndarray]] = {}
    for group, rows in groups.items():
        for key, row in rows.items():
            stacks.setdefault(f"{group}@{'x'.join(map(str, np.shape(row)))}", {})[key] = row
    return {name: (np.stack([np.frombuffer(k, np.int64) for k in rows]), np.stack(list(rows.values())))
            for name, rows in stacks.items()}


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


_STORES: dict[tuple[str, int], EmbeddingStore] = {}


def open_store(cache: bool | str | Path | EmbeddingStore | None) -> EmbeddingStore | None:
    """The store a run's ``cache`` option names: True (the default folder), a folder or
    ``file://`` URI, a store, or None/False (no store). One store object per folder per process;
    opening one trims it if no process has for a minute, and it is trimmed again at exit if this
    process wrote to it."""
    if cache is None or cache is False:
        return None
    if isinstance(cache, EmbeddingStore):
        return cache
    root = default_cache_dir() if cache is True else store_folder(str(cache))
    key = (str(root.resolve()), default_max_bytes())
    if key not in _STORES:
        store = _STORES[key] = EmbeddingStore(root, key[1])
        store.trim_if_due()
        atexit.register(store.trim_if_written)
    return _STORES[key]


def store_folder(cache: str) -> Path:
    """The folder a ``cache`` text names: a path, or a ``file://`` URI of this machine (%-escapes decoded)."""
    if "://" not in cache:
        return Path(cache).expanduser()
    url = urllib.parse.urlsplit(cache)
    if url.scheme != "file":
        raise OptionsError(f"cache={cache!r}: the embedding store takes a folder (local or a shared mount) or a "
                           f"file:// URI; {url.scheme}:// is not supported")
    if url.netloc not in ("", "localhost"):
        raise OptionsError(f"cache={cache!r}: a file:// URI names a folder on this machine (file:///path); mount "
                           f"{url.netloc}'s share and give its local folder")
    return Path(urllib.request.url2pathname(url.path))


def _opened(cache: bool | str | Path, what: str) -> EmbeddingStore:
    store = open_store(cache)
    if store is None:
        raise OptionsError(f"{what}(cache={cache!r}) names no store: pass True (the default folder) or a folder")
    return store


def cache_info(cache: bool | str | Path = True) -> dict[str, Any]:
    """Where the store is, its cap, its files and bytes (entries and notes), and its entries'
    files and bytes per model fingerprint."""
    store = _opened(cache, "cache_info")
    models: dict[str, dict[str, int]] = {}
    files = store.files()
    for path, stat in files:
        if Path(path).parent.parent.name != _NOTES:
            stats = models.setdefault(Path(path).parent.parent.name, {"files": 0, "bytes": 0})
            stats["files"] += 1
            stats["bytes"] += stat.st_size
    return {"root": str(store.root), "max_bytes": store.max_bytes, "files": sum(m["files"] for m in models.values()),
            "notes": len(files) - sum(m["files"] for m in models.values()),
            "bytes": sum(stat.st_size for _, stat in files), "models": models}


def clear_cache(cache: bool | str | Path = True, older_than_days: float | None = None) -> int:
    """Delete the store's entries and notes (only those unused for ``older_than_days``, if given);
    returns how many entries went. Nothing else under the store's root is touched."""
    store = _opened(cache, "clear_cache")
    cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else None
    removed = 0
    for path, stat in store.files():
        if cutoff is None or stat.st_mtime < cutoff:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
                removed += Path(path).parent.parent.name != _NOTES
    return removed
