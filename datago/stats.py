"""Counters and per-stage timings of one client, readable from Python as `client.stats`."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from datago.errors import Skip

logger = logging.getLogger("datago")

_MAX_LOGGED_SKIPS = 100  # then one line per 1000 skips, so a bad dataset cannot flood the log
_RECENT_SKIPS = 100


@dataclass(slots=True)
class StageTimes:
    """Time spent per stage by one decode task; the engine adds it into `Stats`."""

    read_s: float = 0.0
    decode_s: float = 0.0
    transform_s: float = 0.0
    bytes_read: int = 0
    built: int = 0
    """Samples decoded and transformed without error."""
    decoders: dict[str, int] = field(default_factory=dict)
    """Images decoded, by the name of the decoder that ran."""
    largest: int = 0
    """The largest estimate of one sample's bytes among the files this task read."""


@dataclass(slots=True)
class Stats:
    """What the loader did so far. Times are seconds summed over all threads."""

    samples: int = 0
    """Samples delivered to the consumer."""
    skipped: int = 0
    """Samples dropped because they could not be read or decoded."""
    skips_in_a_row: int = 0
    """Samples dropped since the last one decoded well (a source that yields nothing usable
    shows as an ever longer run)."""
    dropped_members: int = 0
    """Masks or additional images left out of a delivered sample (a bad webdataset member)."""
    source_errors: int = 0
    """Units of the source lost after retries (a shard, a page), each also logged."""
    bytes_read: int = 0
    """Encoded bytes read or downloaded for delivered and skipped samples."""
    bytes_fetched: int = 0
    """Bytes the sources received from storage (shards, pages, files), before parsing."""
    read_s: float = 0.0
    decode_s: float = 0.0
    transform_s: float = 0.0
    wait_s: float = 0.0
    """Time the consumer spent blocked waiting for the next sample."""
    bytes_held: int = 0
    """Bytes the loader holds now: encoded in the prefetch queue, in flight, ready to take,
    and the latest sample taken (see the guide's "Memory")."""
    peak_bytes_held: int = 0
    """The most `bytes_held` has been, to size `max_buffer_bytes` with."""
    started_at: float = 0.0
    elapsed_s: float = 0.0
    """Seconds from the first pass's start to this snapshot (0 on the live counters)."""
    skip_reasons: dict[str, int] = field(default_factory=dict)
    """Skipped samples, by `Skip.kind`."""
    recent_skips: list[Skip] = field(default_factory=list)
    """The last 100 skips, oldest first."""
    decoders: dict[str, int] = field(default_factory=dict)
    """Images decoded (masks and additional images too), by decoder: `simplejpeg`,
    `image-rs`, `libpng`, `libwebp` or `pillow`. Pillow where a faster one was expected
    (PNG without image-rs or imagecodecs) is the first suspect of a slow run."""
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def skip(self, kind: str, sample_id: str, cause: str) -> None:
        """Count, keep and log one dropped sample (see `Skip`); the stream goes on."""
        skip = Skip(kind, sample_id, cause)
        with self._lock:
            self.skipped += 1
            self.skips_in_a_row += 1
            self.skip_reasons[kind] = self.skip_reasons.get(kind, 0) + 1
            self.recent_skips.append(skip)
            del self.recent_skips[:-_RECENT_SKIPS]
            count = self.skipped
        if count <= _MAX_LOGGED_SKIPS or count % 1000 == 0:
            logger.warning(
                "skipped sample %r: %s: %s (%d skipped so far)", sample_id, kind, cause, count
            )

    def drop_member(self, sample_id: str, member: str, reason: str) -> None:
        """Count and log one member left out of a sample that is still delivered."""
        with self._lock:
            self.dropped_members += 1
            count = self.dropped_members
        if count <= _MAX_LOGGED_SKIPS or count % 1000 == 0:
            logger.warning(
                "sample %r: left out %r: %s (%d left out so far)", sample_id, member, reason, count
            )

    def source_error(self, what: str, reason: str) -> None:
        """Count and log a part of the source that was lost for good."""
        with self._lock:
            self.source_errors += 1
        logger.error("lost %s: %s", what, reason)

    def fetched(self, size: int) -> None:
        """Count bytes received from storage."""
        with self._lock:
            self.bytes_fetched += size

    def add(self, times: StageTimes) -> None:
        """Fold one task's stage times in."""
        with self._lock:
            self.read_s += times.read_s
            self.decode_s += times.decode_s
            self.transform_s += times.transform_s
            self.bytes_read += times.bytes_read
            for name, count in times.decoders.items():
                self.decoders[name] = self.decoders.get(name, 0) + count
            if times.built:
                self.skips_in_a_row = 0

    def delivered(self) -> None:
        """Count one sample handed to the consumer."""
        with self._lock:
            self.samples += 1

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Time the consumer spends blocked on the next sample."""
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self.wait_s += elapsed

    def snapshot(self) -> Stats:
        """A consistent copy with `elapsed_s` fixed now, safe to keep while the loader runs."""
        with self._lock:
            elapsed = time.perf_counter() - self.started_at if self.started_at else 0.0
            return dataclasses.replace(
                self,
                skip_reasons=dict(self.skip_reasons),
                recent_skips=list(self.recent_skips),
                decoders=dict(self.decoders),
                elapsed_s=elapsed,
            )
