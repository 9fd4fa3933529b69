"""The hand-over from the event loop to consumers: a bounded queue with credits.

The loop takes a credit before it puts a sample; the consumer gives the credit back after
it took one. Waiting consumers block on a condition (sync) or a future (async): no polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from datago.budget import ByteBudget
from datago.sample import Sample
from datago.sources.base import Position


@dataclass(frozen=True, slots=True)
class Delivery:
    """A sample, the number of source samples up to it, the source's position after it (None
    for a source that cannot seek): where a resumed pass starts; and the bytes it holds
    (counted in the pass's budget until a consumer takes the next one)."""

    sample: Sample
    resume_at: int
    position: Position | None = None
    nbytes: int = 0


class _End:
    """End of the pass: every sample has been handed out."""


END = _End()


@dataclass(frozen=True, slots=True)
class Failed:
    """The pass died; the consumer raises `error` at this place in the stream."""

    error: BaseException


Item = Delivery | _End | Failed


class Sink:
    """Holds at most `capacity` samples; `put` runs on `loop`, `get`/`aget` anywhere else."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, capacity: int, budget: ByteBudget | None = None
    ) -> None:
        self._loop = loop
        self._budget = budget
        self._credits = asyncio.Semaphore(capacity)
        self._items: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    async def put(self, delivery: Delivery) -> None:
        """Hand one sample over, waiting for room (runs on the producer loop)."""
        await self._credits.acquire()
        self._push(delivery)

    def finish(self, item: _End | Failed) -> None:
        """Put the final marker; it takes no credit, so it never blocks. Any thread."""
        self._push(item)

    def _push(self, item: Item) -> None:
        with self._lock:
            self._items.put(item)
            waiters, self._waiters = self._waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_wake, future)

    def get(self, timeout: float | None = None) -> Item:
        """Take the next item, blocking up to `timeout` seconds (raises `queue.Empty`)."""
        # Short waits in a loop keep Ctrl-C responsive; a waiting thread uses no CPU.
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.25 if deadline is None else min(0.25, deadline - time.monotonic())
            try:
                item = self._items.get(timeout=max(wait, 0.0))
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                continue
            return self._taken(item)

    async def aget(self) -> Item:
        """Take the next item without blocking the caller's event loop."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                try:
                    return self._taken(self._items.get_nowait())
                except queue.Empty:
                    future: asyncio.Future[None] = loop.create_future()
                    self._waiters.append((loop, future))
            await future

    def _taken(self, item: Item) -> Item:
        if isinstance(item, Delivery):
            # Once the pass is over its loop is closed, and nobody waits for credits any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._give_back, item.nbytes)
        else:
            self._items.put(item)  # every other consumer sees the end marker too
        return item

    def _give_back(self, nbytes: int) -> None:
        """On the loop: the credit of a sample a consumer took; its bytes move in hand."""
        self._credits.release()
        if self._budget is not None:
            self._budget.taken(nbytes)


def _wake(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_result(None)
