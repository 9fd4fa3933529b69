"""The webdataset source over HTTP: a real aiohttp server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from datago.errors import SourceError
from datago.sources import wds_shard
from datago.sources.base import SourceContext
from datago.sources.tar_stream import TarMember, TarStreamParser
from datago.stats import Stats
from tests.sources.test_webdataset import (
    FAST,
    collect,
    config,
    iter_webdataset,
    write_shards,
    write_tar,
)


@dataclass
class ShardServer:
    """Serves `files` with Range support, after the faults it is told to inject."""

    files: dict[str, bytes]
    ranges: bool = True
    faulty: set[str] | None = None
    """Paths the faults apply to; None: all."""
    status: int | None = None
    """Answer every faulty request with this status."""
    fail_first: int = 0
    """Answer the first N requests of each faulty path with 500."""
    fail_resumed: int = 0
    """Answer the first N requests with a Range header of each faulty path with 500."""
    cut_at: int | None = None
    """Drop the connection after this many body bytes, once per faulty path."""
    stall_at: int | None = None
    """Stop sending for a second after this many body bytes, once per faulty path."""
    every_time: bool = False
    """Cut or stall every request of a faulty path, not only its first."""
    tail: int = 0
    """Send the last `tail` bytes of each body after a pause (what follows a tar's end)."""
    tail_pause_s: float = 0.05
    requests: list[tuple[str, str | None, str | None]] = field(default_factory=list)
    """(path, Range, Authorization) of every request."""
    peers: list[tuple[str, int]] = field(default_factory=list)
    """The client address and port of every request: one per connection used."""
    broken: set[str] = field(default_factory=set)
    sent: list[tuple[str, str | None, int]] = field(default_factory=list)
    """(path, Range, body bytes written) of every request answered without a fault."""

    def bytes_sent(self) -> int:
        return sum(size for _, _, size in self.sent)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.requests.append(
            (name, request.headers.get("Range"), request.headers.get("Authorization"))
        )
        assert request.transport is not None
        self.peers.append(request.transport.get_extra_info("peername"))
        faulty = self.faulty is None or name in self.faulty
        attempt = sum(1 for path, _, _ in self.requests if path == name)
        if faulty and self.status is not None:
            return web.Response(status=self.status)
        if faulty and attempt <= self.fail_first:
            return web.Response(status=500)
        resumed = [asked for path, asked, _ in self.requests if path == name and asked]
        if faulty and request.headers.get("Range") and len(resumed) <= self.fail_resumed:
            return web.Response(status=503)
        if name not in self.files:
            return web.Response(status=404)
        data = self.files[name]
        start, status, headers = 0, 200, {"Accept-Ranges": "bytes"}
        asked = request.headers.get("Range")
        end = len(data)
        if asked and self.ranges:
            first, _, last = asked.removeprefix("bytes=").partition("-")
            start, end, status = int(first), min(int(last or end - 1) + 1, end), 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        body = data[start:end]
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        first_time = faulty and (self.every_time or name not in self.broken)
        if first_time and self.cut_at is not None:
            self.broken.add(name)
            await response.write(body[: self.cut_at])
            assert request.transport is not None
            request.transport.close()
            return response
        if first_time and self.stall_at is not None:
            self.broken.add(name)
            await response.write(body[: self.stall_at])
            await asyncio.sleep(1.0)
            return response
        head, written = len(body) - self.tail, 0
        try:
            for start in range(0, head, 256 << 10):
                piece = body[start : min(head, start + (256 << 10))]
                await response.write(piece)
                written += len(piece)
            if self.tail:
                await asyncio.sleep(self.tail_pause_s)
                await response.write(body[head:])
                written += self.tail
            await response.write_eof()
        finally:
            self.sent.append((name, asked, written))
        return response


class Handles(Protocol):
    @property
    def handle(self) -> Callable[[web.Request], Awaitable[web.StreamResponse]]: ...


@contextlib.asynccontextmanager
async def serving(shards: Handles) -> AsyncIterator[str]:
    """The server's base URL while it runs."""
    app = web.Application()
    app.router.add_get("/{name}", shards.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("/"))
    finally:
        await server.close()


@contextlib.contextmanager
def serving_in_thread(shards: Handles) -> Iterator[str]:
    """`serving` on its own loop in a thread, for tests that block in a sync client."""
    started: Future[tuple[asyncio.AbstractEventLoop, asyncio.Event, str]] = Future()

    async def main() -> None:
        stop = asyncio.Event()
        try:
            async with serving(shards) as base:
                started.set_result((asyncio.get_running_loop(), stop, base))
                await stop.wait()
        except Exception as exc:
            if not started.done():
                started.set_exception(exc)  # the test fails at once instead of waiting
            raise

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="test-shard-server")
    thread.start()
    loop, stop, base = started.result(timeout=10)
    try:
        yield base
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def shard_files(tmp_path: Path, shards: int, per_shard: int) -> tuple[dict[str, bytes], list[str]]:
    _, keys = write_shards(tmp_path, shards, per_shard)
    files = {p.name: p.read_bytes() for p in sorted(tmp_path.glob("shard-*.tar"))}
    return files, keys


def per_path(server: ShardServer) -> Counter[str]:
    return Counter(path for path, _, _ in server.requests)


async def test_every_sample_once_over_http_with_the_token(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 4, 5)
    server = ShardServer(files)
    async with serving(server) as base:
        source = config(base + "shard-{000..003}.tar", concurrent_downloads=2, auth_token="tok")
        samples, stats = await collect(source)
    assert sorted(s.id for s in samples) == keys
    by_id = {s.id: s for s in samples}
    assert by_id["s0007"].source == base + "shard-001.tar"
    assert by_id["s0007"].attributes["txt"] == "caption 7"
    assert {auth for _, _, auth in server.requests} == {"Bearer tok"}
    assert per_path(server) == dict.fromkeys(files, 1)
    assert (stats.skipped, stats.source_errors) == (0, 0)


@pytest.mark.parametrize("gzipped", [False, True])
async def test_shards_in_one_slot_reuse_one_connection(tmp_path: Path, gzipped: bool) -> None:
    files, keys = shard_files(tmp_path, 5, 3)
    if gzipped:
        files = {name: gzip.compress(data) for name, data in files.items()}
    # What follows the tar's end (padding zeros, gzip's trailer) comes a moment later.
    server = ShardServer(files, tail=8 if gzipped else 512)
    async with serving(server) as base:
        samples, stats = await collect(config(base + "shard-{000..004}.tar"))
    assert [s.id for s in samples] == keys
    assert len(server.peers) == 5
    assert len(set(server.peers)) == 1
    assert (stats.skipped, stats.source_errors) == (0, 0)


@pytest.mark.parametrize("tail", ["long", "slow"])
async def test_a_long_or_slow_rest_after_the_tar_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tail: str
) -> None:
    files, keys = shard_files(tmp_path, 2, 3)
    if tail == "long":
        files = {name: data + bytes(4 << 20) for name, data in files.items()}
    # "slow": the rest comes after 1.5 s, the client waits 1 s for it
    server = ShardServer(files, tail=512, tail_pause_s=1.5 if tail == "slow" else 0.05)
    started = time.monotonic()
    async with serving(server) as base:
        samples, stats = await collect(config(base + "shard-{000..001}.tar"))
    assert time.monotonic() - started < 5
    assert [s.id for s in samples] == keys
    assert len(set(server.peers)) == 2  # closed rather than drained
    assert (stats.skipped, stats.source_errors) == (0, 0)


async def test_an_upper_case_scheme_is_http(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 2, 3)
    server = ShardServer(files)
    async with serving(server) as base:
        assert base.startswith("http://")
        samples, stats = await collect(config("HTTP://" + base[7:] + "shard-{000..001}.tar"))
    assert [s.id for s in samples] == keys
    assert per_path(server) == dict.fromkeys(files, 1)
    assert stats.source_errors == 0


async def test_server_errors_are_retried(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 3, 4)
    server = ShardServer(files, fail_first=2)
    async with serving(server) as base:
        samples, stats = await collect(config(base + "shard-{000..002}.tar"), retries=3)
    assert [s.id for s in samples] == keys
    assert per_path(server) == dict.fromkeys(files, 3)
    assert stats.source_errors == 0


async def test_shard_failing_after_retries_is_lost_and_the_rest_goes_on(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 3, 4)
    server = ShardServer(files, faulty={"shard-001.tar"}, status=503)
    async with serving(server) as base:
        samples, stats = await collect(config(base + "shard-{000..002}.tar"), retries=2)
    assert [s.id for s in samples] == keys[:4] + keys[8:]
    assert per_path(server)["shard-001.tar"] == 2
    assert stats.source_errors == 1


async def test_not_found_is_not_retried_and_all_lost_raises(tmp_path: Path) -> None:
    server = ShardServer({})
    async with serving(server) as base:
        with pytest.raises(SourceError, match="HTTP 404"):
            await collect(config(base + "shard-{000..001}.tar"), retries=3)
    assert per_path(server) == {"shard-000.tar": 1, "shard-001.tar": 1}


@pytest.mark.parametrize("ranges", [True, False])
async def test_connection_cut_mid_shard_resumes_without_duplicates(
    tmp_path: Path, ranges: bool
) -> None:
    files, keys = shard_files(tmp_path, 2, 8)
    cut = len(files["shard-000.tar"]) // 2 + 77
    server = ShardServer(files, ranges=ranges, cut_at=cut)
    async with serving(server) as base:
        samples, stats = await collect(config(base + "shard-{000..001}.tar"))
    assert [s.id for s in samples] == keys
    assert [s.image for s in samples[:3]] == [
        s.image for s in (await collect(config(str(tmp_path / "shard-000.tar"))))[0][:3]
    ]
    assert per_path(server) == dict.fromkeys(files, 2)
    resumed = [asked for path, asked, _ in server.requests if asked]
    assert resumed == [f"bytes={cut}-"] * 2
    assert (stats.skipped, stats.source_errors) == (0, 0)


@pytest.mark.parametrize("ranges", [True, False])
async def test_a_server_error_to_a_resumed_request_is_retried_without_duplicates(
    tmp_path: Path, ranges: bool
) -> None:
    files, keys = shard_files(tmp_path, 2, 8)
    cut = len(files["shard-001.tar"]) // 3
    server = ShardServer(files, ranges=ranges, faulty={"shard-001.tar"}, cut_at=cut, fail_resumed=1)
    async with serving(server) as base:
        samples, stats = await collect(config(base + "shard-{000..001}.tar"), retries=3)
    local, _ = await collect(config(str(tmp_path / "shard-{000..001}.tar")))
    assert [s.id for s in samples] == keys
    assert [(s.id, s.image, s.attributes) for s in samples] == [
        (s.id, s.image, s.attributes) for s in local
    ]
    asked = [asked for path, asked, _ in server.requests if path == "shard-001.tar"]
    assert asked == [None, f"bytes={cut}-", f"bytes={cut}-"]  # cut, 503, then resumed
    assert (stats.skipped, stats.source_errors) == (0, 0)


@pytest.mark.parametrize(("shards", "world_size"), [(6, 3), (2, 4)])
async def test_each_rank_requests_only_its_own_shards(
    tmp_path: Path, shards: int, world_size: int
) -> None:
    files, keys = shard_files(tmp_path, shards, 4)
    names = sorted(files)
    seen: list[str] = []
    async with serving(server := ShardServer(files)) as base:
        for rank in range(world_size):
            server.requests.clear()
            pattern = base + f"shard-{{000..{shards - 1:03d}}}.tar"
            source = config(pattern, rank=rank, world_size=world_size)
            samples, _ = await collect(source)
            seen += [s.id for s in samples]
            # every n-th shard, or with fewer shards than ranks, the one shard it shares
            mine = names[rank::world_size] if shards >= world_size else [names[rank % shards]]
            assert per_path(server) == dict.fromkeys(mine, 1), rank
    assert sorted(seen) == keys


async def test_stalled_download_times_out_and_resumes(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 2, 6)
    server = ShardServer(files, faulty={"shard-001.tar"}, stall_at=3000)
    async with serving(server) as base:
        samples, stats = await collect(config(base + "shard-{000..001}.tar"))
    assert [s.id for s in samples] == keys
    assert per_path(server) == {"shard-000.tar": 1, "shard-001.tar": 2}
    assert stats.source_errors == 0


async def test_truncated_tar_over_http_keeps_complete_samples(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 2, 6)
    files["shard-000.tar"] = files["shard-000.tar"][:-3000]  # the server sends a short tar
    server = ShardServer(files)
    async with serving(server) as base:
        samples, stats = await collect(config(base + "shard-{000..001}.tar"))
    ids = [s.id for s in samples]
    assert ids == keys[: len(ids) - 6] + keys[6:]
    assert 0 < len(ids) - 6 < 6
    assert stats.source_errors == 1
    assert stats.skipped == 1


async def test_cut_with_no_attempt_left_loses_the_shard(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 2, 3)
    server = ShardServer(files, faulty={"shard-000.tar"}, cut_at=0)
    async with serving(server) as base:
        source = config(base + "shard-{000..001}.tar")
        samples, stats = await collect(source, retries=1)
    assert [s.id for s in samples] == keys[3:]
    assert stats.source_errors == 1


async def test_a_shard_cut_after_a_few_bytes_every_time_is_lost_in_bounded_time(
    tmp_path: Path,
) -> None:
    files, keys = shard_files(tmp_path, 3, 3)
    server = ShardServer(files, faulty={"shard-001.tar"}, cut_at=100, every_time=True)
    started = time.monotonic()
    async with serving(server) as base:
        samples, stats = await collect(config(base + "shard-{000..002}.tar"), retries=3)
    assert time.monotonic() - started < 10
    assert [s.id for s in samples] == keys[:3] + keys[6:]
    resumed = [asked for path, asked, _ in server.requests if path == "shard-001.tar"]
    assert resumed == [None, "bytes=100-", "bytes=200-"]
    assert (stats.source_errors, stats.skipped) == (1, 0)


async def test_closing_early_stops_every_download(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 6, 10)
    stats = Stats()
    first: list[str] = []
    async with serving(ShardServer(files)) as base:
        with ThreadPoolExecutor(2) as executor:
            ctx = SourceContext(environment=FAST, executor=executor, stats=stats)
            source = config(base + "shard-{000..005}.tar", concurrent_downloads=3)
            stream = iter_webdataset(source, ctx)
            async with asyncio.timeout(10), contextlib.aclosing(stream):
                async for sample in stream:
                    first.append(sample.id)
                    if len(first) == 3:
                        break
        streams = [t for t in asyncio.all_tasks() if "SlotStreamer" in repr(t.get_coro())]
    assert streams == []
    assert len(first) == 3 and set(first) <= set(keys)
    assert stats.source_errors == 0


async def test_the_event_loop_is_never_blocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CPU time per callback, not wall time: a loaded machine that deschedules the loop thread
    # is no block. Copying a 24 MiB member out of its chunks takes ~20 ms: in the executor.
    big = {"jpg": b"\xff\xd8" + os.urandom(24 << 20), "bin": os.urandom(1 << 20), "txt": b"t"}
    path = write_tar(tmp_path / "big.tar", [(f"b{i}", big) for i in range(2)])
    files = {"big.tar": path.read_bytes()}
    slow: list[tuple[float, str]] = []
    big_feeds: list[int] = []  # the threads that copied a member over 1 MiB out
    run, feed = asyncio.events.Handle._run, TarStreamParser.feed

    def timed_run(handle: asyncio.Handle) -> None:
        start = time.thread_time()
        run(handle)
        if (cpu := time.thread_time() - start) > 0.01:
            owner = getattr(handle._callback, "__self__", handle)  # type: ignore[attr-defined]
            slow.append((cpu, repr(owner)))  # a task's steps and wake-ups name the task

    def watched_feed(parser: TarStreamParser, chunk: bytes) -> list[TarMember]:
        members = feed(parser, chunk)
        if any(len(m.data) > wds_shard.LOOP_PARSE_BYTES for m in members):
            big_feeds.append(threading.get_ident())
        return members

    monkeypatch.setattr(TarStreamParser, "feed", watched_feed)
    monkeypatch.setattr(asyncio.events.Handle, "_run", timed_run)
    gc.disable()  # a collection's pause is not the source's
    try:
        async with serving(ShardServer(files)) as base:
            results = [await collect(config(url)) for url in (base + "big.tar", str(path))]
    finally:
        gc.enable()
        monkeypatch.setattr(asyncio.events.Handle, "_run", run)
    assert [owner for _, owner in slow if "RequestHandler" not in owner] == []  # not the server
    assert len(big_feeds) == 4 and threading.get_ident() not in big_feeds
    for samples, _ in results:
        assert [s.id for s in samples] == ["b0", "b1"]
        assert samples[1].image == big["jpg"]


async def test_a_slow_consumer_is_not_a_stalled_server(tmp_path: Path) -> None:
    # 9 MB: more than socket and aiohttp buffers hold, so reading pauses for longer than the
    # stall timeout (0.3 s in these tests) while the consumer sleeps.
    keys = [f"k{i:02d}" for i in range(30)]
    samples = [(key, {"jpg": os.urandom(300_000)}) for key in keys]
    server = ShardServer({"shard-000.tar": write_tar(tmp_path / "big.tar", samples).read_bytes()})
    stats = Stats()
    ids = []
    async with serving(server) as base:
        with ThreadPoolExecutor(2) as executor:
            ctx = SourceContext(environment=FAST, executor=executor, stats=stats)
            stream = iter_webdataset(config(base + "shard-000.tar"), ctx)
            async with asyncio.timeout(20), contextlib.aclosing(stream):
                async for sample in stream:
                    ids.append(sample.id)
                    await asyncio.sleep(0.05)
    assert ids == keys
    assert len(server.requests) == 1
    assert stats.source_errors == 0


async def test_gzipped_shard_resumes_after_a_cut(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 1, 10)
    packed = gzip.compress(files["shard-000.tar"])
    server = ShardServer({"shard.tgz": packed}, cut_at=len(packed) // 2)
    async with serving(server) as base:
        samples, stats = await collect(config(base + "shard.tgz"))
    assert [s.id for s in samples] == keys
    assert [asked for _, asked, _ in server.requests] == [None, f"bytes={len(packed) // 2}-"]
    assert stats.source_errors == 0
