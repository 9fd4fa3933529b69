"""`source_type: "webdataset"`: samples streamed from tar shards, local or over HTTP(S).

- `url`: a path or an http(s) URL (a `file://` prefix is allowed; schemes in any case), or
  a list of them, each brace-expanded (`shard-{000000..001281}.tar`, `{a,b}`). A URL without
  braces is one shard; upstream's GCS bucket listing mode is not supported.
- Samples: `id` is the webdataset key (member path up to the first dot of the file name,
  directory kept; upstream uses the stem up to the last dot), `source` the shard URL; the
  member rules (image, masks, json, text, bad names) are in `wds_groups`.
- Split: parts (rank x torch worker) take every n-th shard; with fewer shards than parts,
  parts share a shard and take every k-th sample of it (`shards.plan_part`). Upstream
  instead makes every rank download every shard and hashes keys.
- `random_sampling`: the shard list is shuffled (with `seed`, identically in every part
  before the split, so parts see other shards each epoch), then this part's shards, then
  samples pass through a shuffle buffer of `shuffle_buffer_size` samples (its memory:
  that many encoded samples), all from one rng seeded with (`seed`, epoch). Seed `None`
  means fresh entropy: `DatagoClient` picks a seed itself for a single reader, but with
  `rank`/`world_size` (or torch workers) every part must be given the same `seed`.
- Order: `concurrent_downloads` = k slots stream at once; slot j reads shards j, j+k,
  j+2k... of this part's list into its own small queue, and samples are taken round-robin
  over the slots in that fixed order (a slot whose shards are done leaves the rotation; a
  shard lost mid-way just ends early in its slot). So the order is a function of (config,
  seed, epoch, part) alone, whatever the download timing, and exact resume works: the
  engine replays the stream and skips the samples already delivered without decoding them.
  Memory: about max(16, 4k) queued samples, plus one read chunk (4 MiB local) per slot.
- Nothing is buffered whole: local shards are read and parsed in the executor 4 MiB at a
  time, HTTP bodies parsed as they arrive (`tar_stream`) and read past the tar's end block
  (`http.drain`: its padding), so a slot's shards reuse one connection; members are grouped
  per `wds_groups`.
  Gzipped shards (`.tar.gz`, `.tgz`) are recognised by content and inflated on the way.
- Faults: HTTP retries and resumes (`HttpClient.stream`), so transient faults do not change
  the order. A shard lost for good (missing, HTTP error after retries, truncated, even
  between members, without the tar's end block; empty or corrupt tar, a member over 1 GiB,
  a gzip bomb) is counted in `stats.source_errors` and
  logged with its reason; its samples read before the fault are kept, the partial one is a
  counted skip, and the other shards go on. If every shard of this part fails,
  `SourceError` is raised at the end so that a dead source never looks like an empty one.
  `HTTP_STALL_TIMEOUT_S` and `HTTP_BACKOFF_BASE_S` below are module settings (tests lower
  them), not config keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncGenerator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import BinaryIO

from datago.config import WebDatasetSourceConfig
from datago.errors import SourceError
from datago.sources.base import RawSample, SourceContext
from datago.sources.gzip_stream import GzipStreamInflater
from datago.sources.http import HttpClient, drain
from datago.sources.shards import ShardPlan, expand_urls, plan_part
from datago.sources.tar_stream import TarMember, TarStreamParser
from datago.sources.wds_groups import SampleGrouper

HTTP_STALL_TIMEOUT_S = 60.0
"""A shard download fails (and is retried) when no byte arrives for this long."""
HTTP_BACKOFF_BASE_S = 0.1
LOCAL_CHUNK_BYTES = 4 << 20
LOOP_PARSE_BYTES = 1 << 20
"""An HTTP chunk whose parse may copy more (it completes a big member) is parsed in the
executor: copying 1 MiB takes ~0.5 ms of the event loop, a 20 MB member ~15 ms."""
_SLOT_SAMPLES = 16
"""Samples queued ahead over all slots (at least `_MIN_SLOT_DEPTH` per slot)."""
_MIN_SLOT_DEPTH = 4


async def iter_webdataset(
    config: WebDatasetSourceConfig, ctx: SourceContext
) -> AsyncGenerator[RawSample, None]:
    """Yield one raw sample (encoded bytes, no decoding) per key of this part's shards."""
    shards = expand_urls(config.url)
    rng: random.Random | None = None
    if config.random_sampling:
        rng = random.Random(None if config.seed is None else f"{config.seed}:{ctx.epoch}")
        if config.seed is not None:
            rng.shuffle(shards)  # the same permutation in every part: the split stays exact
    plan = plan_part(shards, ctx.workers.within_rank(config.rank, config.world_size))
    order = list(plan.shards)
    if rng is not None:
        rng.shuffle(order)
    client = None
    if any(_is_http(url) for url in order):
        client = HttpClient(
            attempts=ctx.environment.max_retries,
            max_connections=config.downloads,
            backoff_base_s=HTTP_BACKOFF_BASE_S,
            stall_timeout_s=HTTP_STALL_TIMEOUT_S,
        )
    try:
        samples = _ShardStreamer(config, ctx, plan, client).samples(order)
        if rng is not None:
            samples = _shuffled(samples, config.shuffle_buffer_size, rng)
        async with contextlib.aclosing(samples):
            async for sample in samples:
                yield sample
    finally:
        if client is not None:
            await client.close()


@dataclass(frozen=True, slots=True)
class _StreamEnd:
    error: Exception | None = None


class _ShardStreamer:
    """Streams shards in `config.downloads` slots; samples come round-robin over the slots."""

    def __init__(
        self,
        config: WebDatasetSourceConfig,
        ctx: SourceContext,
        plan: ShardPlan,
        client: HttpClient | None,
    ) -> None:
        self.config = config
        self.ctx = ctx
        self.plan = plan
        self.client = client
        self.headers = {"Authorization": f"Bearer {config.auth_token}"} if config.auth_token else {}
        self.failures: list[str] = []

    async def samples(self, shards: list[str]) -> AsyncGenerator[RawSample, None]:
        """Every sample of `shards`; raises `SourceError` at the end if all shards failed."""
        slots = max(1, min(self.config.downloads, len(shards)))
        depth = max(_MIN_SLOT_DEPTH, _SLOT_SAMPLES // slots)
        queues: list[asyncio.Queue[RawSample | _StreamEnd]] = [
            asyncio.Queue(depth) for _ in range(slots)
        ]
        tasks = [
            asyncio.create_task(self._stream(shards[slot::slots], queue))
            for slot, queue in enumerate(queues)
        ]
        try:
            turn = 0
            while queues:
                item = await queues[turn].get()
                if isinstance(item, RawSample):
                    yield item
                    turn = turn + 1 if turn + 1 < len(queues) else 0
                    continue
                del queues[turn]  # this slot is done; the next one takes its turn
                if item.error is not None:
                    raise item.error
                if turn == len(queues):
                    turn = 0
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if shards and len(self.failures) == len(shards):
            raise SourceError(
                f"all {len(shards)} webdataset shard(s) of this part failed; "
                f"first: {self.failures[0]}"
            )

    async def _stream(self, urls: list[str], queue: asyncio.Queue[RawSample | _StreamEnd]) -> None:
        """One slot: the samples of `urls`, in order, then one `_StreamEnd`."""
        try:
            for url in urls:
                try:
                    async with contextlib.aclosing(self._shard(url)) as shard:
                        async for sample in shard:
                            await queue.put(sample)
                except SourceError as exc:
                    self.failures.append(f"{url}: {exc}")
                    self.ctx.stats.source_error(f"webdataset shard {url!r}", str(exc))
        except Exception as exc:  # a bug, not a data fault: the consumer must see it
            await queue.put(_StreamEnd(exc))
            return
        await queue.put(_StreamEnd())

    async def _shard(self, url: str) -> AsyncGenerator[RawSample, None]:
        """The samples of one shard; after a fault, the complete ones, then `SourceError`."""
        inflater, parser = GzipStreamInflater(), TarStreamParser()
        grouper = SampleGrouper(
            url,
            self.config.reference_image_type,
            self.ctx.stats,
            self.plan.keep_index,
            self.plan.keep_count,
        )
        if _is_http(url):
            batches = self._http_members(url, inflater, parser)
        else:
            batches = self._file_members(url, inflater, parser)
        error: Exception | None = None
        try:
            async with contextlib.aclosing(batches):
                async for members in batches:
                    for member in members:
                        if (sample := grouper.add(member)) is not None:
                            yield sample
            if not (parser.ended or parser.error):  # after the tar's end, gzip's is moot
                inflater.finish()
            parser.finish()
        except (SourceError, OSError) as exc:
            error = exc
        if error is None:
            last = grouper.flush()
        else:
            last = grouper.truncate(parser.pending_name, f"shard fault: {error}")
        if last is not None:
            yield last
        if isinstance(error, SourceError):
            raise error
        if error is not None:
            raise SourceError(f"cannot read {url!r}: {error}") from error

    async def _http_members(
        self, url: str, inflater: GzipStreamInflater, parser: TarStreamParser
    ) -> AsyncGenerator[list[TarMember], None]:
        assert self.client is not None
        loop = asyncio.get_running_loop()
        body = self.client.stream(url, self.headers)
        async with contextlib.aclosing(body):
            async for chunk in body:
                data = inflater.feed(chunk)
                if parser.copy_bound(len(data)) > LOOP_PARSE_BYTES:
                    members = await loop.run_in_executor(self.ctx.executor, parser.feed, data)
                else:
                    members = parser.feed(data)
                if members:
                    yield members
                if parser.error:
                    return
                if parser.ended:
                    await drain(body)  # the rest (padding) is read: the connection is reused
                    return

    async def _file_members(
        self, url: str, inflater: GzipStreamInflater, parser: TarStreamParser
    ) -> AsyncGenerator[list[TarMember], None]:
        loop = asyncio.get_running_loop()
        path = url[7:] if url[:7].lower() == "file://" else url
        opening = self.ctx.executor.submit(_open, path)
        try:
            file = await asyncio.wrap_future(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)  # the thread may still be opening it
            raise
        try:
            while (
                members := await loop.run_in_executor(
                    self.ctx.executor, _read, file, inflater, parser
                )
            ) is not None:
                if members:
                    yield members
        finally:
            file.close()


def _open(path: str) -> BinaryIO:
    return open(path, "rb")


def _close_opened(opening: Future[BinaryIO]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _read(
    file: BinaryIO, inflater: GzipStreamInflater, parser: TarStreamParser
) -> list[TarMember] | None:
    """Read, inflate and parse the next chunk in an executor thread; None at the end."""
    chunk = b"" if parser.ended or parser.error else file.read(LOCAL_CHUNK_BYTES)
    return parser.feed(inflater.feed(chunk)) if chunk else None


def _is_http(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))  # schemes are case-insensitive


async def _shuffled(
    samples: AsyncGenerator[RawSample, None], size: int, rng: random.Random
) -> AsyncGenerator[RawSample, None]:
    """Samples in a random order, holding at most `size` of them; a source error comes last."""
    buffer: list[RawSample] = []
    error: SourceError | None = None
    try:
        async with contextlib.aclosing(samples):
            async for sample in samples:
                if len(buffer) < size:
                    buffer.append(sample)
                    continue
                index = rng.randrange(size)
                buffer[index], sample = sample, buffer[index]
                yield sample
    except SourceError as exc:
        error = exc
    rng.shuffle(buffer)
    for sample in buffer:
        yield sample
    if error is not None:
        raise error
