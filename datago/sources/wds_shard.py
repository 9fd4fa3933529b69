"""One webdataset shard read from a storage, from its start or from a saved member boundary.

Nothing is buffered whole: the shard streams in chunks, is inflated when it is gzip (known by
its content) and parsed as it arrives (`tar_stream`); members are grouped per `wds_groups`.
A chunk whose parse or inflation may cost more than ~0.5 ms of the event loop goes to the
executor. Each sample comes with the bytes [start, end) it took in the (inflated) tar and the
place to reopen the shard right after it.

Seeking: a plain tar reopens with a ranged read at the byte offset of the next group's first
member. A gzip stream cannot be entered in the middle (deflate has no restart points), so a
gzipped shard reopens at its start: its bytes are downloaded and inflated again up to the
saved offset, but not parsed, grouped or decoded. Gzipped shards thus cost up to one shard
of download per slot on resume; plain tars cost nothing before the offset.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from concurrent.futures import Executor
from typing import NamedTuple

from datago.errors import SourceError
from datago.sources.base import RawSample
from datago.sources.gzip_stream import GzipStreamInflater
from datago.sources.tar_stream import TarMember, TarStreamParser
from datago.sources.wds_groups import SampleGrouper
from datago.stats import Stats
from datago.storage import Storages

LOOP_PARSE_BYTES = 1 << 20
"""A chunk whose parse may copy more (it completes a big member), or that big itself, is
handled in the executor: copying 1 MiB takes ~0.5 ms of the event loop, a 20 MB member ~15 ms."""
SPAN_GAP_BYTES = 64 << 10
"""Buffered samples this close in one shard are fetched by one ranged read on resume."""


class ShardStart(NamedTuple):
    """Where to (re)open a shard: the tar offset of a group's first member, its group number,
    and whether the shard is gzipped (the offset then counts inflated bytes)."""

    offset: int = 0
    group: int = 0
    gzip: bool = False


class ShardSample(NamedTuple):
    """A sample, the tar bytes [start, end) it took, and where its shard goes on after it
    (None: the shard is finished, or lost after this sample)."""

    raw: RawSample
    start: int
    end: int
    gzip: bool
    after: ShardStart | None


class ShardReader:
    """Reads the samples of shards; parts sharing a shard keep every `keep_count`-th group."""

    def __init__(
        self,
        storages: Storages,
        executor: Executor,
        stats: Stats,
        reference_image_type: str,
        keep_index: int = 0,
        keep_count: int = 1,
    ) -> None:
        self.storages = storages
        self.executor = executor
        self.stats = stats
        self.reference_image_type = reference_image_type
        self.keep_index = keep_index
        self.keep_count = keep_count

    async def samples(self, url: str, start: ShardStart) -> AsyncGenerator[ShardSample, None]:
        """The samples of `url` from `start`; after a fault, the complete ones, then
        `SourceError`."""
        inflater, parser = GzipStreamInflater(), TarStreamParser(start.offset)
        grouper = SampleGrouper(
            url,
            self.reference_image_type,
            self.stats,
            self.keep_index,
            self.keep_count,
            first_group=start.group,
        )
        batches = self._members(url, start, inflater, parser)
        error: Exception | None = None
        try:
            async with contextlib.aclosing(batches):
                async for members in batches:
                    for member in members:
                        if (raw := grouper.add(member)) is not None:
                            after = ShardStart(member.start, grouper.groups, inflater.gzipped)
                            yield ShardSample(raw, *grouper.span, inflater.gzipped, after)
            if not (parser.ended or parser.error):  # after the tar's end, gzip's is moot
                inflater.finish()
            parser.finish()
        except (SourceError, OSError) as exc:
            error = exc
        if error is None:
            last = grouper.flush()
        else:
            last = grouper.truncate(parser.pending_name, str(error))
        if last is not None:
            yield ShardSample(last, *grouper.span, inflater.gzipped, None)
        if isinstance(error, SourceError):
            raise error
        if error is not None:
            raise SourceError(f"cannot read {url!r}: {error}") from error

    async def _members(
        self, url: str, start: ShardStart, inflater: GzipStreamInflater, parser: TarStreamParser
    ) -> AsyncGenerator[list[TarMember], None]:
        loop = asyncio.get_running_loop()
        skip = start.offset if start.gzip else 0  # inflated bytes before the offset
        body = self.storages.for_url(url).stream(url, 0 if start.gzip else start.offset)
        async with contextlib.aclosing(body):
            async for chunk in body:
                if (
                    len(chunk) >= LOOP_PARSE_BYTES
                    or parser.copy_bound(len(chunk)) > LOOP_PARSE_BYTES
                ):
                    members, skip = await loop.run_in_executor(
                        self.executor, _digest, chunk, skip, inflater, parser
                    )
                else:
                    members, skip = _digest(chunk, skip, inflater, parser)
                if members:
                    yield members
                if parser.ended or parser.error:
                    return  # closing the body reads a short rest: the connection is reused

    async def read_spans(
        self, url: str, spans: list[tuple[int, int]], gzip: bool
    ) -> list[RawSample]:
        """The samples at tar bytes `spans` of `url` (a restored shuffle buffer), in order."""
        storage = self.storages.for_url(url)
        wanted = sorted(set(spans))
        data: dict[tuple[int, int], bytes] = {}
        if gzip:  # no ranged reads into a deflate stream: inflate from the start, once
            inflater, plain, first = GzipStreamInflater(), bytearray(), wanted[0][0]
            last = max(end for _, end in wanted)
            seen = 0
            body = storage.stream(url)
            async with contextlib.aclosing(body):
                async for chunk in body:
                    piece = inflater.feed(chunk)
                    plain += piece[max(first - seen, 0) :]
                    seen += len(piece)
                    if seen >= last:
                        break
            data = {span: bytes(plain[span[0] - first : span[1] - first]) for span in wanted}
        else:
            for begin, end, members in _coalesce(wanted):
                block = await storage.read(url, begin, end)
                for span in members:
                    data[span] = block[span[0] - begin : span[1] - begin]
        return [self._parse_span(url, span, data[span]) for span in spans]

    def _parse_span(self, url: str, span: tuple[int, int], data: bytes) -> RawSample:
        parser = TarStreamParser(span[0])
        grouper = SampleGrouper(url, self.reference_image_type, self.stats)
        try:
            for member in parser.feed(data):
                grouper.add(member)
        except SourceError as exc:
            raise SourceError(f"{url!r} bytes {span}: {exc}; did the shard change?") from exc
        raw = grouper.flush()
        if raw is None or parser.offset != span[1]:
            raise SourceError(
                f"{url!r} bytes {span} no longer hold a sample: the shard changed since the "
                "state was saved"
            )
        return raw


def _digest(
    chunk: bytes, skip: int, inflater: GzipStreamInflater, parser: TarStreamParser
) -> tuple[list[TarMember], int]:
    """Inflate `chunk`, drop the first `skip` bytes of it (a resumed gzip shard), parse."""
    data = inflater.feed(chunk)
    if skip:
        dropped = min(skip, len(data))
        data, skip = data[dropped:], skip - dropped
    return (parser.feed(data) if data else []), skip


def _coalesce(spans: list[tuple[int, int]]) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """Sorted spans merged into reads: (start, end, the spans inside) where gaps are small."""
    reads: list[tuple[int, int, list[tuple[int, int]]]] = []
    for span in spans:
        if reads and span[0] - reads[-1][1] <= SPAN_GAP_BYTES:
            begin, end, inside = reads[-1]
            inside.append(span)
            reads[-1] = (begin, max(end, span[1]), inside)
        else:
            reads.append((span[0], span[1], [span]))
    return reads
