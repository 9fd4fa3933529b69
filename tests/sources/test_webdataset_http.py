"""The webdataset source over HTTP: a real aiohttp server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import gzip
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from datago.errors import SourceError
from datago.sources import wds_shard
from datago.sources.base import SourceContext
from datago.sources.tar_stream import TarMember, TarStreamParser
from datago.stats import Stats
from tests.helpers import (
    FAST,
    Fault,
    Logged,
    Server,
    always,
    collect_wds,
    first,
    iter_webdataset,
    shard_files,
    wds_source,
    write_tar,
)


async def test_every_sample_once_over_http_with_the_token(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 4, 5)
    async with Server.files(files) as server:
        base = server.url
        source = wds_source(base + "shard-{000..003}.tar", concurrent_downloads=2, auth_token="tok")
        samples, stats = await collect_wds(source)
    assert sorted(s.id for s in samples) == keys
    by_id = {s.id: s for s in samples}
    assert by_id["s0007"].source == base + "shard-001.tar"
    assert by_id["s0007"].attributes_dict["txt"] == "caption 7"
    assert {seen.authorization for seen in server.requests} == {"Bearer tok"}
    assert server.per_name() == dict.fromkeys(files, 1)
    assert (stats.skipped, stats.source_errors) == (0, 0)


@pytest.mark.parametrize("gzipped", [False, True])
async def test_shards_in_one_slot_reuse_one_connection(tmp_path: Path, gzipped: bool) -> None:
    files, keys = shard_files(tmp_path, 5, 3)
    if gzipped:
        files = {name: gzip.compress(data) for name, data in files.items()}
    # What follows the tar's end (padding zeros, gzip's trailer) comes a moment later.
    server = Server.files(files, fault=always(Fault.slow_tail(8 if gzipped else 512)))
    async with server:
        base = server.url
        samples, stats = await collect_wds(wds_source(base + "shard-{000..004}.tar"))
    assert [s.id for s in samples] == keys
    assert len(server.requests) == 5
    assert len({seen.peer for seen in server.requests}) == 1
    assert (stats.skipped, stats.source_errors) == (0, 0)


@pytest.mark.parametrize("tail", ["long", "slow"])
async def test_a_long_or_slow_rest_after_the_tar_is_not_waited_for(
    tmp_path: Path, tail: str
) -> None:
    files, keys = shard_files(tmp_path, 2, 3)
    if tail == "long":
        files = {name: data + bytes(4 << 20) for name, data in files.items()}
    # "slow": the rest comes after 1.5 s, the client waits 1 s for it
    pause_s = 1.5 if tail == "slow" else 0.05
    server = Server.files(files, fault=always(Fault.slow_tail(512, pause_s)))
    started = time.monotonic()
    async with server:
        base = server.url
        samples, stats = await collect_wds(wds_source(base + "shard-{000..001}.tar"))
    assert time.monotonic() - started < 5
    assert [s.id for s in samples] == keys
    assert len({seen.peer for seen in server.requests}) == 2  # closed rather than drained
    assert (stats.skipped, stats.source_errors) == (0, 0)


async def test_an_upper_case_scheme_is_http(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 2, 3)
    async with Server.files(files) as server:
        base = server.url
        assert base.startswith("http://")
        samples, stats = await collect_wds(
            wds_source("HTTP://" + base[7:] + "shard-{000..001}.tar")
        )
    assert [s.id for s in samples] == keys
    assert server.per_name() == dict.fromkeys(files, 1)
    assert stats.source_errors == 0


async def test_server_errors_are_retried(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 3, 4)
    async with Server.files(files, fault=first(2, Fault.error(500))) as server:
        base = server.url
        samples, stats = await collect_wds(wds_source(base + "shard-{000..002}.tar"), retries=3)
    assert [s.id for s in samples] == keys
    assert server.per_name() == dict.fromkeys(files, 3)
    assert stats.source_errors == 0


async def test_shard_failing_after_retries_is_lost_and_the_rest_goes_on(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 3, 4)
    server = Server.files(files, fault=always(Fault.error(503), names={"shard-001.tar"}))
    async with server:
        base = server.url
        samples, stats = await collect_wds(wds_source(base + "shard-{000..002}.tar"), retries=2)
    assert [s.id for s in samples] == keys[:4] + keys[8:]
    assert server.per_name()["shard-001.tar"] == 2
    assert stats.source_errors == 1


async def test_not_found_is_not_retried_and_all_lost_raises(tmp_path: Path) -> None:
    async with Server.files({}) as server:
        base = server.url
        with pytest.raises(SourceError, match="HTTP 404"):
            await collect_wds(wds_source(base + "shard-{000..001}.tar"), retries=3)
    assert server.per_name() == {"shard-000.tar": 1, "shard-001.tar": 1}


@pytest.mark.parametrize("ranges", [True, False])
async def test_connection_cut_mid_shard_resumes_without_duplicates(
    tmp_path: Path, ranges: bool
) -> None:
    files, keys = shard_files(tmp_path, 2, 8)
    cut = len(files["shard-000.tar"]) // 2 + 77
    server = Server.files(files, ranges=ranges, fault=first(1, Fault.cut(cut)))
    async with server:
        base = server.url
        samples, stats = await collect_wds(wds_source(base + "shard-{000..001}.tar"))
    assert [s.id for s in samples] == keys
    assert [s.image for s in samples[:3]] == [
        s.image for s in (await collect_wds(wds_source(str(tmp_path / "shard-000.tar"))))[0][:3]
    ]
    assert server.per_name() == dict.fromkeys(files, 2)
    resumed = [seen.range for seen in server.requests if seen.range]
    assert resumed == [f"bytes={cut}-"] * 2
    assert (stats.skipped, stats.source_errors) == (0, 0)


@pytest.mark.parametrize("ranges", [True, False])
async def test_a_server_error_to_a_resumed_request_is_retried_without_duplicates(
    tmp_path: Path, ranges: bool
) -> None:
    files, keys = shard_files(tmp_path, 2, 8)
    cut = len(files["shard-001.tar"]) // 3

    def cut_then_refuse_the_resume(seen: Logged) -> Fault | None:
        if seen.name != "shard-001.tar":
            return None
        if seen.attempt == 0:
            return Fault.cut(cut)
        return Fault.error(503) if seen.range and seen.attempt == 1 else None

    server = Server.files(files, ranges=ranges, fault=cut_then_refuse_the_resume)
    async with server:
        base = server.url
        samples, stats = await collect_wds(wds_source(base + "shard-{000..001}.tar"), retries=3)
    local, _ = await collect_wds(wds_source(str(tmp_path / "shard-{000..001}.tar")))
    assert [s.id for s in samples] == keys
    assert [(s.id, s.image, s.attributes) for s in samples] == [
        (s.id, s.image, s.attributes) for s in local
    ]
    asked = [seen.range for seen in server.requests if seen.name == "shard-001.tar"]
    assert asked == [None, f"bytes={cut}-", f"bytes={cut}-"]  # cut, 503, then resumed
    assert (stats.skipped, stats.source_errors) == (0, 0)


@pytest.mark.parametrize(("shards", "world_size"), [(6, 3), (2, 4)])
async def test_each_rank_requests_only_its_own_shards(
    tmp_path: Path, shards: int, world_size: int
) -> None:
    files, keys = shard_files(tmp_path, shards, 4)
    names = sorted(files)
    seen: list[str] = []
    async with Server.files(files) as server:
        base = server.url
        for rank in range(world_size):
            server.requests.clear()
            pattern = base + f"shard-{{000..{shards - 1:03d}}}.tar"
            source = wds_source(pattern, rank=rank, world_size=world_size)
            samples, _ = await collect_wds(source)
            seen += [s.id for s in samples]
            # every n-th shard, or with fewer shards than ranks, the one shard it shares
            mine = names[rank::world_size] if shards >= world_size else [names[rank % shards]]
            assert server.per_name() == dict.fromkeys(mine, 1), rank
    assert sorted(seen) == keys


async def test_stalled_download_times_out_and_resumes(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 2, 6)
    server = Server.files(files, fault=first(1, Fault.stall(3000), names={"shard-001.tar"}))
    async with server:
        base = server.url
        samples, stats = await collect_wds(wds_source(base + "shard-{000..001}.tar"))
    assert [s.id for s in samples] == keys
    assert server.per_name() == {"shard-000.tar": 1, "shard-001.tar": 2}
    assert stats.source_errors == 0


async def test_truncated_tar_over_http_keeps_complete_samples(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 2, 6)
    files["shard-000.tar"] = files["shard-000.tar"][:-3000]  # the server sends a short tar
    async with Server.files(files) as server:
        base = server.url
        samples, stats = await collect_wds(wds_source(base + "shard-{000..001}.tar"))
    ids = [s.id for s in samples]
    assert ids == keys[: len(ids) - 6] + keys[6:]
    assert 0 < len(ids) - 6 < 6
    assert stats.source_errors == 1
    assert stats.skipped == 1


async def test_cut_with_no_attempt_left_loses_the_shard(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 2, 3)
    server = Server.files(files, fault=first(1, Fault.cut(0), names={"shard-000.tar"}))
    async with server:
        base = server.url
        source = wds_source(base + "shard-{000..001}.tar")
        samples, stats = await collect_wds(source, retries=1)
    assert [s.id for s in samples] == keys[3:]
    assert stats.source_errors == 1


async def test_a_shard_cut_after_a_few_bytes_every_time_is_lost_in_bounded_time(
    tmp_path: Path,
) -> None:
    files, keys = shard_files(tmp_path, 3, 3)
    server = Server.files(files, fault=always(Fault.cut(100), names={"shard-001.tar"}))
    started = time.monotonic()
    async with server:
        base = server.url
        samples, stats = await collect_wds(wds_source(base + "shard-{000..002}.tar"), retries=3)
    assert time.monotonic() - started < 10
    assert [s.id for s in samples] == keys[:3] + keys[6:]
    resumed = [seen.range for seen in server.requests if seen.name == "shard-001.tar"]
    assert resumed == [None, "bytes=100-", "bytes=200-"]
    assert (stats.source_errors, stats.skipped) == (1, 0)


async def test_closing_early_stops_every_download(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 6, 10)
    stats = Stats()
    first: list[str] = []
    async with Server.files(files) as server:
        base = server.url
        with ThreadPoolExecutor(2) as executor:
            ctx = SourceContext(environment=FAST, executor=executor, stats=stats)
            source = wds_source(base + "shard-{000..005}.tar", concurrent_downloads=3)
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
    timed: list[float] = []  # every callback's CPU time: proof that the timing ran
    big_feeds: list[int] = []  # the threads that copied a member over 1 MiB out
    run, feed = asyncio.events.Handle._run, TarStreamParser.feed

    def timed_run(handle: asyncio.Handle) -> None:
        start = time.thread_time()
        run(handle)
        timed.append(cpu := time.thread_time() - start)
        if cpu > 0.01:
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
        async with Server.files(files) as server:
            base = server.url
            results = [await collect_wds(wds_source(url)) for url in (base + "big.tar", str(path))]
    finally:
        gc.enable()
        monkeypatch.setattr(asyncio.events.Handle, "_run", run)
    assert len(timed) > 100  # the loop's callbacks were timed
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
    server = Server.files({"shard-000.tar": write_tar(tmp_path / "big.tar", samples).read_bytes()})
    stats = Stats()
    ids = []
    async with server:
        base = server.url
        with ThreadPoolExecutor(2) as executor:
            ctx = SourceContext(environment=FAST, executor=executor, stats=stats)
            stream = iter_webdataset(wds_source(base + "shard-000.tar"), ctx)
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
    server = Server.files({"shard.tgz": packed}, fault=first(1, Fault.cut(len(packed) // 2)))
    async with server:
        base = server.url
        samples, stats = await collect_wds(wds_source(base + "shard.tgz"))
    assert [s.id for s in samples] == keys
    assert [seen.range for seen in server.requests] == [None, f"bytes={len(packed) // 2}-"]
    assert stats.source_errors == 0
