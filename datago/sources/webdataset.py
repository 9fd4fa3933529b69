"""`source_type: "webdataset"`: samples streamed from tar shards: on disk, http(s), buckets.

Shards are planned per part (`shards`), streamed k at a time (`wds_slots`), optionally
shuffled (`wds_shuffle`); the guide's "The webdataset source" has the rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from datago.config import WebDatasetSourceConfig
from datago.errors import ConfigError, SourceError
from datago.sources.base import Position, RawSample, SourceContext, Split, check_state
from datago.sources.shards import expand_braces, expand_urls, plan_part
from datago.sources.wds_shard import ShardReader, ShardStart
from datago.sources.wds_shuffle import ShuffleBuffer, shuffle_key, shuffled
from datago.sources.wds_slots import SampleRef, SlotPosition, SlotsMark, SlotStreamer
from datago.storage import StorageOptions, Storages, storage_kind
from datago.storage.object_store_url import gcs_listing_prefix

SHARD_SUFFIXES = (".tar", ".tar.gz", ".tgz")
"""What a listed prefix keeps as shards."""


class WebDatasetSource:
    """The `webdataset` node."""

    source_type = "webdataset"
    config_type = WebDatasetSourceConfig
    seeks = True

    def resume_refusal(self, config: WebDatasetSourceConfig) -> str | None:
        return None

    def fingerprint(self, config: WebDatasetSourceConfig, split: Split) -> dict[str, Any]:
        # Paths only: the same shards on another host, or freshly presigned, resume too.
        shards = [urlsplit(url).path for url in expand_urls(config.url)]
        digest = hashlib.blake2b("\n".join(shards).encode(), digest_size=8).hexdigest()
        return {
            "url": f"{len(shards)} shards, digest {digest}",
            "random_sampling": config.random_sampling,
            "concurrent_downloads": config.downloads,
            "shuffle_buffer_size": config.shuffle_buffer_size if config.random_sampling else None,
        }

    async def open(
        self,
        config: WebDatasetSourceConfig,
        split: Split,
        context: SourceContext,
        state: Mapping[str, Any] | None,
    ) -> AsyncGenerator[tuple[RawSample, Position | None], None]:
        """One raw sample (encoded bytes, no decoding) per key of this part's shards."""
        storages = Storages(_storage_options(config, context))
        try:
            shards = await list_shards(config.url, storages)
            listing = _listing_digest(config.url, shards, state)
            samples = self._samples(config, split, context, state, storages, shards)
            async with contextlib.aclosing(samples):
                async for raw, position in samples:
                    if listing is not None and position is not None:
                        position = _Listed(position, listing)
                    yield raw, position
        finally:
            await storages.close()

    async def _samples(
        self,
        config: WebDatasetSourceConfig,
        split: Split,
        context: SourceContext,
        state: Mapping[str, Any] | None,
        storages: Storages,
        shards: list[str],
    ) -> AsyncGenerator[tuple[RawSample, Position | None], None]:
        rng: random.Random | None = None
        if config.random_sampling:
            rng = random.Random(None if config.seed is None else f"{config.seed}:{context.epoch}")
            if config.seed is not None:
                rng.shuffle(shards)  # the same permutation in every part: the split stays exact
        plan = plan_part(shards, split.part)
        order = list(plan.shards)
        if rng is not None:
            rng.shuffle(order)
        reader = ShardReader(
            storages,
            context.executor,
            context.stats,
            config.reference_image_type,
            plan.keep_index,
            plan.keep_count,
        )
        slots = max(1, min(config.downloads, len(order)))
        mark, taken, held = _parse_state(state, slots, len(order), config)
        samples = SlotStreamer(order, reader, context.stats).samples(mark)
        if rng is None:
            async with contextlib.aclosing(samples):
                async for raw, _, after in samples:
                    yield raw, after
            return
        seed = config.seed if config.seed is not None else rng.getrandbits(64)
        buffer = ShuffleBuffer(
            config.shuffle_buffer_size,
            shuffle_key(seed, context.epoch),
            taken,
            await _read_held(reader, order, held, config.downloads),
        )
        stream = shuffled(samples, buffer, mark)
        async with contextlib.aclosing(stream):
            async for raw, position in stream:
                yield raw, position


def _storage_options(config: WebDatasetSourceConfig, context: SourceContext) -> StorageOptions:
    return context.storage_options(
        stall_timeout_s=context.environment.stall_timeout_s,
        max_connections=config.downloads,
        headers={"Authorization": f"Bearer {config.auth_token}"} if config.auth_token else {},
        extra=config.storage_options,
    )


async def list_shards(url: str | list[str], storages: Storages) -> list[str]:
    """Every shard `url` names: brace patterns expanded, prefixes listed (sorted .tar and
    .tar.gz/.tgz keys below them); a prefix with no shard is a `SourceError`."""
    shards: list[str] = []
    for pattern in [url] if isinstance(url, str) else url:
        expanded = expand_braces(gcs_listing_prefix(pattern) or pattern)
        for one in expanded:
            if not names_prefix(one, braced=len(expanded) > 1):
                shards.append(one)
                continue
            listing = storages.for_url(one).list(one)
            async with contextlib.aclosing(listing):
                found = sorted([key async for key in listing if key.endswith(SHARD_SUFFIXES)])
            if not found:
                raise SourceError(f"source_config.url {one!r}: no .tar or .tar.gz shard under it")
            shards += found
    return shards


@dataclass(frozen=True, slots=True)
class _Listed:
    """A position in shards listed from a prefix: its state names the listing's digest."""

    position: Position
    listing: str

    def state(self) -> dict[str, Any]:
        return {**self.position.state(), "listing": self.listing}


def _listing_digest(
    url: str | list[str], shards: list[str], state: Mapping[str, Any] | None
) -> str | None:
    """The digest of a listed shard list (None when `url` lists no prefix); a saved state of
    another listing is a `SourceError`: its shard numbers would name other shards."""
    patterns = [gcs_listing_prefix(p) or p for p in ([url] if isinstance(url, str) else url)]
    expanded = [(one, len(e) > 1) for p in patterns for e in [expand_braces(p)] for one in e]
    if not any(names_prefix(one, braced) for one, braced in expanded):
        return None
    digest = hashlib.blake2b("\n".join(shards).encode(), digest_size=8).hexdigest()
    saved = (state or {}).get("listing", digest)
    if saved != digest:
        raise SourceError(
            f"source_config.url {url!r}: the shards under it changed since the state was "
            f"saved ({len(shards)} now, listing digest {digest}, not {saved}); resume needs "
            "the same shards"
        )
    return digest


def names_prefix(url: str, braced: bool = False) -> bool:
    """Whether a `url` lists shards: it ends in `/`, or is an object-store URL, not from a
    brace pattern, that names no shard file (`s3://bucket/train` lists `train*`)."""
    if url.endswith("/"):
        return True
    if braced or url.endswith(SHARD_SUFFIXES):
        return False
    return storage_kind(url) == "object"


def _parse_state(
    state: Mapping[str, Any] | None, slots: int, shards: int, config: WebDatasetSourceConfig
) -> tuple[SlotsMark, int, list[SampleRef]]:
    """The slots' mark, the shuffle count and the buffer refs of a saved state (or a start)."""
    if state is None:
        return SlotsMark(tuple(SlotPosition(j) for j in range(slots)), 0), 0, []
    saved = check_state(state, "slots", list)
    gzipped = set(check_state(state, "gzipped", list))
    buffer = check_state(state, "buffer", list)
    if len(saved) != slots or len(buffer) > config.shuffle_buffer_size:
        raise ConfigError(
            f"this webdataset state holds {len(saved)} slot(s) and {len(buffer)} buffered "
            f"sample(s), not {slots} and at most {config.shuffle_buffer_size}: "
            "resume with the config it was saved with"
        )
    try:
        positions = tuple(
            SlotPosition(shard, ShardStart(offset, group, shard in gzipped))
            for shard, offset, group in saved
        )
        refs = [SampleRef(shard, start, end, shard in gzipped) for shard, start, end in buffer]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"source state: malformed webdataset slots or buffer: {exc}") from None
    if any(not 0 <= ref.shard < shards for ref in refs):
        raise ConfigError("source state: a buffered sample names a shard this part lacks")
    return (
        SlotsMark(positions, check_state(state, "turn", int)),
        check_state(state, "taken", int),
        refs,
    )


async def _read_held(
    reader: ShardReader, order: list[str], refs: list[SampleRef], concurrency: int
) -> list[tuple[SampleRef, RawSample]]:
    """The buffered samples of a saved state, read again by their refs, `concurrency`
    shards at a time; those of a shard that cannot be read are counted and left out."""
    by_shard: dict[int, list[SampleRef]] = {}
    for ref in refs:
        by_shard.setdefault(ref.shard, []).append(ref)
    room = asyncio.Semaphore(concurrency)
    found: dict[SampleRef, RawSample] = {}

    async def read(shard: int, inside: list[SampleRef]) -> None:
        spans = [(ref.start, ref.end) for ref in inside]
        try:
            async with room:
                raws = await reader.read_spans(order[shard], spans, inside[0].gzip)
        except SourceError as exc:  # lost like a shard: counted, and the rest goes on
            what = f"{len(inside)} buffered sample(s) of webdataset shard {order[shard]!r}"
            reader.stats.source_error(what, str(exc))
            return
        found.update(zip(inside, raws, strict=True))

    async with asyncio.TaskGroup() as group:
        for shard, inside in by_shard.items():
            group.create_task(read(shard, inside))
    return [(ref, found[ref]) for ref in refs if ref in found]
