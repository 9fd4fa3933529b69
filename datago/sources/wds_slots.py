"""Download slots: k shards stream at once, and samples are taken round-robin over the slots.

Slot j of k reads shards j, j+k, j+2k... of this part's list, one after the other, into its
own small queue; samples are taken from the slots in that fixed rotation (a slot whose shards
are done leaves it; a shard lost mid-way just ends early in its slot). So the order is a
function of the shard list and k alone, whatever the download timing, and a slot's place is
one `SlotPosition`: the next shard, the tar offset and group number to reopen it at. The
positions of all slots and whose turn it is make a `SlotsMark`, the resume point after each
sample.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, NamedTuple

from datago.errors import SourceError
from datago.sources.base import RawSample
from datago.sources.wds_shard import ShardReader, ShardSample, ShardStart
from datago.stats import Stats

_SLOT_SAMPLES = 16
"""Samples queued ahead over all slots (at least `_MIN_SLOT_DEPTH` per slot)."""
_MIN_SLOT_DEPTH = 4


class SlotPosition(NamedTuple):
    """A slot's place: the index (in this part's shard list) of the shard it reads next, and
    where in that shard (`ShardStart`); `shard` past the list's end means the slot is done."""

    shard: int
    start: ShardStart = ShardStart()


class SampleRef(NamedTuple):
    """Where a sample's members lie: shard index, tar bytes [start, end), gzip or not."""

    shard: int
    start: int
    end: int
    gzip: bool


@dataclass(frozen=True, slots=True)
class SlotsMark:
    """Every slot's position and the slot whose turn is next: the state after one sample
    (without a shuffle buffer)."""

    slots: tuple[SlotPosition, ...]
    turn: int

    def state(self, taken: int = 0, held: tuple[SampleRef, ...] = ()) -> dict[str, Any]:
        """The JSON state; with a shuffle buffer, its count and refs too."""
        gzipped = {ref.shard for ref in held if ref.gzip}
        gzipped |= {slot.shard for slot in self.slots if slot.start.gzip}
        return {
            "slots": [[s.shard, s.start.offset, s.start.group] for s in self.slots],
            "turn": self.turn,
            "taken": taken,
            "buffer": [[ref.shard, ref.start, ref.end] for ref in held],
            "gzipped": sorted(gzipped),
        }


@dataclass(frozen=True, slots=True)
class _SlotEnd:
    error: Exception | None = None


_Queued = tuple[RawSample, SampleRef, SlotPosition]


class SlotStreamer:
    """Streams `shards` in `len(mark.slots)` slots from `mark`; see the module docstring."""

    def __init__(self, shards: list[str], reader: ShardReader, stats: Stats) -> None:
        self.shards = shards
        self.reader = reader
        self.stats = stats
        self.failures: list[str] = []

    async def samples(
        self, mark: SlotsMark
    ) -> AsyncGenerator[tuple[RawSample, SampleRef, SlotsMark], None]:
        """Every sample after `mark`, with its ref and the mark after it; raises
        `SourceError` at the end if every shard this reader opened failed."""
        count = len(mark.slots)
        depth = max(_MIN_SLOT_DEPTH, _SLOT_SAMPLES // count)
        live = [j for j in range(count) if mark.slots[j].shard < len(self.shards)]
        queues = {j: asyncio.Queue[_Queued | _SlotEnd](depth) for j in live}
        opened = sum(len(range(mark.slots[j].shard, len(self.shards), count)) for j in live)
        tasks = [asyncio.create_task(self._stream(mark.slots[j], count, queues[j])) for j in live]
        positions = mark.slots
        turn = next((t for t, j in enumerate(live) if j >= mark.turn), 0)
        try:
            while live:
                slot = live[turn]
                item = await queues[slot].get()
                if isinstance(item, _SlotEnd):
                    del live[turn]  # this slot is done; the next one takes its turn
                    if item.error is not None:
                        raise item.error
                    if turn == len(live):
                        turn = 0
                    continue
                raw, ref, after = item
                positions = (*positions[:slot], after, *positions[slot + 1 :])
                turn = turn + 1 if turn + 1 < len(live) else 0
                yield raw, ref, SlotsMark(positions, live[turn])
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if opened and len(self.failures) == opened:
            raise SourceError(
                f"all {opened} webdataset shard(s) of this part failed; first: {self.failures[0]}"
            )

    async def _stream(
        self, position: SlotPosition, step: int, queue: asyncio.Queue[_Queued | _SlotEnd]
    ) -> None:
        """One slot: the samples of its shards from `position`, then one `_SlotEnd`."""
        try:
            start = position.start
            for index in range(position.shard, len(self.shards), step):
                url = self.shards[index]
                try:
                    shard = self.reader.samples(url, start)
                    async with contextlib.aclosing(shard):
                        async for sample in shard:
                            await queue.put(_queued(sample, index, step))
                except SourceError as exc:
                    self.failures.append(f"{url}: {exc}")
                    self.stats.source_error(f"webdataset shard {url!r}", str(exc))
                start = ShardStart()
        except Exception as exc:  # a bug, not a data fault: the consumer must see it
            await queue.put(_SlotEnd(exc))
            return
        await queue.put(_SlotEnd())


def _queued(sample: ShardSample, index: int, step: int) -> _Queued:
    ref = SampleRef(index, sample.start, sample.end, sample.gzip)
    after = (
        SlotPosition(index + step) if sample.after is None else SlotPosition(index, sample.after)
    )
    return sample.raw, ref, after
