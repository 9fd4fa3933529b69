"""Shape-bucketed batching for `datago.torch`: one open batch per image shape, bounded.

Pure Python (no torch), so the grouping rules are testable on their own.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

_T = TypeVar("_T")


class ShapeBatcher(Generic[_T]):
    """Groups items by key (the image shape) into batches of `batch_size`.

    At most `max_open` batches are open at once: an item with a new key when all are in use
    closes the oldest open batch first, as a partial batch (dropped with `drop_last`). So at
    most `max_open * (batch_size - 1)` items wait here. `flush()` ends the stream: partial
    batches come out oldest first, or are dropped with `drop_last`.
    """

    def __init__(self, batch_size: int, *, drop_last: bool = False, max_open: int = 64) -> None:
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.max_open = max_open
        self.dropped = 0
        """Items dropped so far (only with `drop_last`)."""
        self._open: dict[Hashable, list[_T]] = {}  # insertion order = age

    def add(self, key: Hashable, item: _T) -> list[_T] | None:
        """Add one item; returns the batch it completed or the partial batch it evicted."""
        batch = self._open.get(key)
        evicted = None
        if batch is None:
            if len(self._open) >= self.max_open:
                evicted = self._close(next(iter(self._open)))
            batch = self._open[key] = []
        batch.append(item)
        if len(batch) >= self.batch_size:
            del self._open[key]
            return batch  # a new key fills a batch only when batch_size is 1: nothing evicted
        return evicted

    def flush(self) -> Iterator[list[_T]]:
        """The partial batches still open, oldest first (none with `drop_last`)."""
        while self._open:
            batch = self._close(next(iter(self._open)))
            if batch is not None:
                yield batch

    def _close(self, key: Hashable) -> list[_T] | None:
        batch = self._open.pop(key)
        if self.drop_last:
            self.dropped += len(batch)
            return None
        return batch
