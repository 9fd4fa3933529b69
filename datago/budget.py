"""The bytes a pass holds, counted against `max_buffer_bytes`, on the pass's event loop.

A raw sample's encoded bytes count from the moment it enters the prefetch queue; when it is
dispatched to a decode thread its estimate (encoded + decoded, from the image headers) is
reserved, then settled to the built sample's real size, which is released when the consumer
takes the sample after it (or the sample is dropped). See the guide's "Memory" section.
"""

from __future__ import annotations

import asyncio
import math

from datago.stats import Stats


class Signal:
    """Wakes every task waiting on the loop at the next `notify` (no lost wake-ups: one loop)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        await self._event.wait()


class ByteBudget:
    """Bytes queued (encoded, not dispatched yet) and active (dispatched or ready) against a
    limit: `max_buffer_bytes`, or by default room for `samples` of the largest sample so far
    plus `prefetch` of the largest encoded one. Loop-confined; `stats` shows held and peak."""

    def __init__(self, limit: int | None, samples: int, prefetch: int, stats: Stats) -> None:
        self.fixed = limit
        self.samples = samples
        self.prefetch = prefetch
        self.stats = stats
        self.queued = 0
        self.active = 0
        """Bytes of samples dispatched, built, ready, or the latest taken (`in_hand`)."""
        self.in_hand = 0
        self.largest = 0
        """The largest estimate of one sample so far (0: none known yet)."""
        self.largest_encoded = 0
        self.dispatcher_waiting = False
        """Set while the dispatcher waits for room: the prefetch queue lets it go first."""
        self.changed = Signal()
        stats.bytes_held = 0

    @property
    def held(self) -> int:
        return self.queued + self.active

    @property
    def limit(self) -> float:
        if self.fixed is not None:
            return self.fixed
        if not self.largest:
            return math.inf
        return self.samples * self.largest + self.prefetch * self.largest_encoded

    def fits(self, extra: int) -> bool:
        """Whether `extra` more bytes stay within the limit; always, when nothing is in flight
        or ready (so a sample bigger than the whole budget still passes, alone)."""
        return self.active == self.in_hand or self.held + extra <= self.limit

    async def admit(self, size: int, estimate: int) -> None:
        """Count `size` encoded bytes into the prefetch queue, once the dispatcher is not
        waiting for room itself and they leave room for two samples of `estimate` bytes (or the
        largest so far): one in hand, one being built. So the queue never forces a decode over
        the limit: the consumer waits for the sample at its head."""
        while (
            size
            and self.held > self.in_hand
            and (
                self.dispatcher_waiting
                or self.queued + size + max(self.active, 2 * max(estimate, self.largest))
                > self.limit
            )
        ):
            await self.changed.wait()
        self.largest_encoded = max(self.largest_encoded, size)
        self.queued += size
        self._update()

    def reserve(self, encoded: int, estimate: int) -> None:
        """A sample leaves the queue (`encoded` bytes) for a decode thread (`estimate`)."""
        self.queued -= encoded
        self.active += estimate
        self.learn(estimate)
        self._update()

    def learn(self, estimate: int) -> None:
        """Take a sample's estimate into `largest` (files: known once a thread read them)."""
        if estimate > self.largest:
            self.largest = estimate
            self.changed.notify()

    def settle(self, difference: int) -> None:
        """Built samples replace their estimates by their real size (or 0 when skipped)."""
        self.active += difference
        self._update()

    def release(self, size: int) -> None:
        """A sample was dropped (a skip, or past `limit`)."""
        self.active -= size
        self._update()

    def taken(self, size: int) -> None:
        """A consumer took a sample: it stays counted, in hand, until the next one is taken
        (a consumer's loop variable holds the latest until it asks for the next)."""
        self.active -= self.in_hand
        self.in_hand = size
        self._update()

    def _update(self) -> None:
        held = self.held
        self.stats.bytes_held = held
        self.stats.peak_bytes_held = max(self.stats.peak_bytes_held, held)
        self.changed.notify()
