"""The source protocol: what a source node is, what it yields, and what the engine lends it.

A node (one per `source_type`, registered in `datago.sources.SOURCES`) opens an async stream
of `(RawSample, Position)` pairs for one part of the data (`Split`) at a saved state, or at
the start. `Position.state()` is the JSON-ready state right after that sample: opening the
node at it continues with the next sample, without re-reading what came before. A node that
cannot seek yields None positions, and the engine replays and skips instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from datago.config import Environment
from datago.errors import ConfigError
from datago.sample import SampleInfo
from datago.stats import Stats
from datago.storage import StorageOptions


@dataclass(frozen=True, slots=True)
class RawSample(SampleInfo):
    """A sample before decoding: encoded image bytes (or a file to read) and its metadata."""

    image: bytes | Path | None
    """Encoded bytes, a local file the decode thread reads, or None when there is no image."""
    masks: dict[str, bytes] = field(default_factory=dict)
    additional_images: dict[str, bytes] = field(default_factory=dict)
    latents: dict[str, bytes] = field(default_factory=dict)
    optional_extras: bool = False
    """A mask or additional image that cannot be decoded is left out (counted, logged)
    instead of failing the whole sample (webdataset members, as the Rust wheel does)."""


@dataclass(frozen=True, slots=True)
class Partition:
    """Part `index` of `count` equal parts of something."""

    index: int = 0
    count: int = 1

    def within_rank(self, rank: int, world_size: int) -> Partition:
        """This worker split applied inside rank `rank` of `world_size` (0 means 1).

        Worker-major (part `worker * ranks + rank`): with a stride split, a rank's parts
        together take every `ranks`-th item from `rank`, whatever the number of workers.
        """
        ranks = max(world_size, 1)
        return Partition(self.index * ranks + rank, ranks * self.count)


@dataclass(frozen=True, slots=True)
class Split:
    """Which part of the data one reader takes: rank `rank` of `ranks`, then (torch) worker
    `workers.index` of `workers.count` inside it. Resolved once, by the client."""

    rank: int = 0
    ranks: int = 1
    workers: Partition = field(default_factory=Partition)

    @property
    def part(self) -> Partition:
        """The split flattened into one partition (see `Partition.within_rank`)."""
        return self.workers.within_rank(self.rank, self.ranks)

    def describe(self) -> list[int]:
        """[rank, ranks, worker, workers]: how a saved state names its split."""
        return [self.rank, self.ranks, self.workers.index, self.workers.count]


@dataclass(slots=True)
class SourceContext:
    """Shared services a source may use; the engine owns all of them."""

    environment: Environment
    executor: Executor
    """Run blocking I/O here (`loop.run_in_executor`), never on the event loop."""
    stats: Stats
    epoch: int = 0
    """Pass number, 0 for the first; seeds reshuffles."""

    def storage_options(self, **fields: Any) -> StorageOptions:
        """Storage options on this pass's executor, retries and byte count, with `fields`."""
        return StorageOptions(
            executor=self.executor,
            attempts=self.environment.max_retries,
            backoff_base_s=self.environment.backoff_base_s,
            on_fetch=self.stats.fetched,
            **fields,
        )


class Position(Protocol):
    """Where a source stands right after one sample."""

    def state(self) -> dict[str, Any]:
        """The JSON-ready state that reopens the source at the next sample."""
        ...


Positioned = tuple[RawSample, Position | None]
SampleStream = AsyncIterator[Positioned]


class SourceNode(Protocol):
    """One `source_type`: its config type, how it opens, whether and how it resumes."""

    source_type: str
    config_type: type[Any]
    seeks: bool
    """Reopens at a `Position.state()`; else positions are None and the engine replays."""

    def resume_refusal(self, config: Any) -> str | None:
        """Why a pass of `config` cannot be resumed at all, or None when it can."""
        ...

    def fingerprint(self, config: Any, split: Split) -> dict[str, Any]:
        """What a saved state depends on (JSON values, small): a state is only loaded into a
        reader whose fingerprint is equal, else `ConfigError` names the differing key."""
        ...

    def open(
        self,
        config: Any,
        split: Split,
        context: SourceContext,
        state: Mapping[str, Any] | None,
    ) -> SampleStream:
        """The samples of this part from `state` (None: the start of the pass)."""
        ...


def check_state(state: Mapping[str, Any], key: str, kind: type[Any]) -> Any:
    """`state[key]`, checked to be a `kind`; a broken state is a `ConfigError`."""
    value = state.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise ConfigError(f"source state: {key!r} must be {kind.__name__}, got {value!r}")
    return value
