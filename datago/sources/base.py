"""What every source produces, and what the engine lends a source while it runs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datago.config import Environment
from datago.stats import Stats


@dataclass(slots=True)
class RawSample:
    """A sample before decoding: encoded image bytes (or a file to read) and its metadata."""

    id: str
    source: str
    image: bytes | Path | None
    """Encoded bytes, a local file the decode thread reads, or None when there is no image."""
    masks: dict[str, bytes] = field(default_factory=dict)
    additional_images: dict[str, bytes] = field(default_factory=dict)
    latents: dict[str, bytes] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    duplicate_state: int = 0
    coca_embedding: list[float] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    optional_extras: bool = False
    """A mask or additional image that cannot be decoded is left out (counted, logged)
    instead of failing the whole sample (webdataset members, as the Rust wheel does)."""


@dataclass(frozen=True, slots=True)
class Partition:
    """Which part of the data this reader takes: rank x (torch) worker, flattened."""

    index: int = 0
    count: int = 1

    def within_rank(self, rank: int, world_size: int) -> Partition:
        """This worker split applied inside rank `rank` of `world_size` (0 means 1).

        Worker-major (part `worker * ranks + rank`): with a stride split, a rank's parts
        together take every `ranks`-th item from `rank`, whatever the number of workers.
        """
        ranks = max(world_size, 1)
        return Partition(self.index * ranks + rank, ranks * self.count)

    def slice_bounds(self, total: int) -> tuple[int, int]:
        """[start, end) of this part of `total` items; the first `total % count` get one more."""
        base, extra = divmod(total, self.count)
        start = self.index * base + min(self.index, extra)
        return start, start + base + (self.index < extra)


@dataclass(slots=True)
class SourceContext:
    """Shared services a source may use; the engine owns all of them."""

    environment: Environment
    executor: Executor
    """Run blocking I/O here (`loop.run_in_executor`), never on the event loop."""
    stats: Stats
    epoch: int = 0
    """Pass number, 0 for the first; seeds reshuffles."""
    workers: Partition = field(default_factory=Partition)
    """The torch DataLoader worker split inside this rank (the rank split is in the config)."""


SampleStream = AsyncIterator[RawSample]
