"""The webdataset shuffle buffer, resumable: it remembers where each held sample lies.

Samples enter a buffer of `size`; once it is full, each new one takes the place of a held
sample drawn at random, which comes out. At the end of the stream the rest comes out in
random order. Draw n is a hash of (seed, pass, n) (splitmix64), not a generator's state, so
the state after a sample is: how many samples entered (`taken`), and the `SampleRef` of each
held sample, in buffer order: at most `size` refs, a few bytes each. A resumed buffer reads
its held samples again by those refs (ranged reads; nearby samples of one shard in one read)
and continues with the same draws.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

from datago.errors import SourceError
from datago.sources.base import RawSample
from datago.sources.wds_slots import SampleRef, SlotsMark

_MASK = (1 << 64) - 1


def shuffle_key(seed: object, epoch: int) -> int:
    """The 64-bit key of the draws of one pass."""
    digest = hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def draw(key: int, number: int) -> int:
    """Draw `number` of the pass keyed `key`: splitmix64 of their sum, 64 random bits."""
    value = (key + (number + 1) * 0x9E3779B97F4A7C15) & _MASK
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK
    return value ^ (value >> 31)


@dataclass(frozen=True, slots=True)
class WebDatasetPosition:
    """The state after one shuffled webdataset sample: the slots' mark, and the buffer's."""

    mark: SlotsMark
    taken: int = 0
    held: tuple[SampleRef, ...] = ()

    def state(self) -> dict[str, Any]:
        return self.mark.state(self.taken, self.held)


class ShuffleBuffer:
    """Holds at most `size` samples with their refs; `taken` samples have entered so far."""

    def __init__(
        self,
        size: int,
        key: int,
        taken: int = 0,
        held: list[tuple[SampleRef, RawSample]] | None = None,
    ) -> None:
        self.size = size
        self.key = key
        self.taken = taken
        self.samples = [raw for _, raw in held or []]
        self.refs = [ref for ref, _ in held or []]

    def add(self, raw: RawSample, ref: SampleRef) -> RawSample | None:
        """Take `raw` in; return the sample it replaces once the buffer is full."""
        number, self.taken = self.taken, self.taken + 1
        if len(self.samples) < self.size:
            self.samples.append(raw)
            self.refs.append(ref)
            return None
        index = draw(self.key, number) % self.size
        out, self.samples[index], self.refs[index] = self.samples[index], raw, ref
        return out

    def pop(self) -> RawSample:
        """A held sample drawn at random (the end of the stream); the last one fills its gap."""
        number, self.taken = self.taken, self.taken + 1
        index = draw(self.key, number) % len(self.samples)
        out = self.samples[index]
        self.samples[index], self.refs[index] = self.samples[-1], self.refs[-1]
        self.samples.pop()
        self.refs.pop()
        return out

    def position(self, mark: SlotsMark) -> WebDatasetPosition:
        return WebDatasetPosition(mark, self.taken, tuple(self.refs))


async def shuffled(
    samples: AsyncGenerator[tuple[RawSample, SampleRef, SlotsMark], None],
    buffer: ShuffleBuffer,
    mark: SlotsMark,
) -> AsyncGenerator[tuple[RawSample, WebDatasetPosition], None]:
    """`samples` through `buffer` (starting at `mark`); a source error comes after the rest."""
    error: SourceError | None = None
    try:
        async with contextlib.aclosing(samples):
            async for raw, ref, latest in samples:
                mark = latest
                out = buffer.add(raw, ref)
                if out is not None:
                    yield out, buffer.position(mark)
    except SourceError as exc:
        error = exc
    while buffer.samples:
        out = buffer.pop()
        yield out, buffer.position(mark)
    if error is not None:
        raise error
