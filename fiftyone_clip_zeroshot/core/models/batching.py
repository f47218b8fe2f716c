"""Several images localized at once, with one stream of encoder batches.

Each image's localizer runs as written, in a thread of its own; its ``PromptScorer`` hands every
encoder request (windows, crops, occluded contexts, tiles) to a ``SharedEncoder``. Whenever every
unfinished image waits for embeddings, the waiting requests of the same kind are cut into shared
batches of the run's batch size and encoded together (out-of-memory back-off included, see
``ClipModel.encode_batches``), and each image gets exactly its own rows back. Localizers need not
know: a new one is batched across images as soon as it is registered.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from fiftyone_clip_zeroshot.core.models.model import ClipModel

Item = TypeVar("Item")
Result = TypeVar("Result")
MakeBatch = Callable[[slice], torch.Tensor]
Encode = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _Request:
    count: int
    make_batch: MakeBatch
    encode: Encode | None
    result: torch.Tensor | None = None
    error: BaseException | None = None

    @property
    def answered(self) -> bool:
        return self.result is not None or self.error is not None


class Stopped(Exception):
    """What the image threads of an interrupted batch get: the run itself raises the interrupt."""


class SharedEncoder:
    """Encodes the requests of several image threads together (see the module's docstring).

    ``encode`` has the signature of ``ClipModel.encode_batches`` without the batch size; requests
    are of one kind when their ``encode`` functions compare equal (None: image embeddings).
    """

    def __init__(self, model: ClipModel, batch_size: int | None = None):
        self.model = model
        self.batch_size = batch_size
        self._cond = threading.Condition()
        self._pending: list[_Request] = []
        self._working = 0
        self._stopped = False

    def encode(self, count: int, make_batch: MakeBatch, encode: Encode | None = None) -> torch.Tensor:
        """Called by an image's thread: blocks until the request is encoded with the others."""
        request = _Request(count, make_batch, encode)
        with self._cond:
            if self._stopped:
                raise Stopped("the run was interrupted")
            self._pending.append(request)
            self._cond.notify_all()
            self._cond.wait_for(lambda: request.answered)
        if request.error is not None:
            raise request.error
        return request.result

    def map(self, work: Callable[[Item], Result], items: Sequence[Item]) -> list[Result | Exception]:
        """``work(item)`` for every item, each in its own thread, their requests encoded here; a
        failed item gives its exception in its place (the others go on)."""
        outcomes: list[Result | Exception | None] = [None] * len(items)

        def run(index: int) -> None:
            try:
                outcomes[index] = work(items[index])
            except Exception as error:  # noqa: BLE001 - returned in the item's place
                outcomes[index] = error
            finally:
                with self._cond:
                    self._working -= 1
                    self._cond.notify_all()

        self._working = len(items)
        threads = [threading.Thread(target=run, args=(i,), name=f"clip-zeroshot-image-{i}", daemon=True)
                   for i in range(len(items))]
        for thread in threads:
            thread.start()
        requests: list[_Request] = []
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(lambda: self._working == 0 or len(self._pending) == self._working)
                    if self._working == 0:
                        break
                    requests, self._pending = self._pending, []
                self._serve(requests)
                with self._cond:
                    self._cond.notify_all()
        except BaseException:  # Ctrl-C (or a stop) while encoding: end every image's thread, stop the run
            with self._cond:
                self._stopped = True
                for request in [*requests, *self._pending]:
                    request.error = request.error or Stopped("the run was interrupted")
                self._cond.notify_all()
            raise
        for thread in threads:
            thread.join()
        return outcomes

    def _serve(self, requests: list[_Request]) -> None:
        """Encode the waiting requests, kind by kind, as one stream of batches each."""
        kinds: list[list[_Request]] = []
        for request in requests:
            same = next((kind for kind in kinds if kind[0].encode == request.encode), None)
            if same is None:
                kinds.append([request])
            else:
                same.append(request)
        for kind in kinds:
            try:
                rows = self.model.encode_batches(sum(r.count for r in kind), _joined(kind), self.batch_size,
                                                 kind[0].encode)
            except Exception as error:  # noqa: BLE001 - every image waiting on this stream gets it
                for request in kind:
                    request.error = error
                continue
            for request, part in zip(kind, torch.split(rows, [r.count for r in kind])):
                request.result = part


def _joined(requests: list[_Request]) -> MakeBatch:
    """One ``make_batch`` over the requests laid end to end: a slice of the stream is cut from
    each request it overlaps."""
    starts, total = [], 0
    for request in requests:
        starts.append(total)
        total += request.count

    def make_batch(index: slice) -> torch.Tensor:
        parts = []
        for start, request in zip(starts, requests):
            lo, hi = max(index.start, start), min(index.stop, start + request.count)
            if lo < hi:
                parts.append(request.make_batch(slice(lo - start, hi - start)))
        return torch.cat(parts)

    return make_batch


def default_image_batch(device: torch.device) -> int:
    """Images localized together when a run leaves it unset: 8 on a GPU, where small images alone
    leave it idle; 1 on the CPU, where batching gains nothing (``benchmarks/batching.py``)."""
    return 8 if device.type == "cuda" else 1
