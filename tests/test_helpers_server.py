"""The test toolbox's loopback server: Range answers, fault hooks and the request log it keeps."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request

import aiohttp
import pytest

from tests.helpers import Fault, Server, always, byte_range, first, script

DATA = bytes(range(256)) * 40  # 10240 bytes


async def get(url: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.read(), dict(response.headers)


@pytest.mark.parametrize(
    ("header", "status", "span"),
    [
        (None, 200, (0, 10240)),
        ("bytes=100-", 206, (100, 10240)),
        ("bytes=100-199", 206, (100, 200)),
        ("bytes=-40", 206, (10200, 10240)),
        ("bytes=10000-99999", 206, (10000, 10240)),
        ("bytes=10240-", 416, None),
    ],
)
async def test_files_answer_ranges_and_log_what_they_sent(
    header: str | None, status: int, span: tuple[int, int] | None
) -> None:
    async with Server.files({"blob": DATA}) as server:
        answer = await get(server.url + "blob", **({"Range": header} if header else {}))
    start, stop = span or (0, 0)
    assert answer[:2] == (status, DATA[start:stop])
    if status == 206:
        assert answer[2]["Content-Range"] == f"bytes {start}-{stop - 1}/10240"
    (seen,) = server.requests
    assert (seen.name, seen.range, seen.status, seen.sent) == ("blob", header, status, stop - start)
    assert server.sent("blob") == stop - start


async def test_ranges_off_sends_the_whole_file_and_a_missing_one_is_a_404() -> None:
    async with Server.files({"blob": DATA}, ranges=False) as server:
        assert (await get(server.url + "blob", Range="bytes=100-"))[:2] == (200, DATA)
        assert (await get(server.url + "nope"))[0] == 404
    assert [(s.range_start, s.status, s.sent) for s in server.requests] == [
        (100, 200, 10240),
        (0, 404, 0),
    ]


@pytest.mark.parametrize("fault", [Fault.cut(1000), Fault.cut(0.25), Fault.cut(1000, rst=True)])
async def test_a_cut_sends_that_many_bytes_then_drops_the_connection(fault: Fault) -> None:
    async with Server.files({"blob": DATA}, fault=always(fault)) as server:
        with pytest.raises(aiohttp.ClientError):
            await get(server.url + "blob")
    (seen,) = server.requests
    assert (seen.status, seen.sent, seen.fault) == (200, 1000 if fault.at == 1000 else 2560, fault)


async def test_first_counts_attempts_per_path() -> None:
    rule = first(2, Fault.error(503), names={"a"})
    async with Server.files({"a": b"A", "b": b"B"}, fault=rule) as server:
        answers = [(await get(server.url + name))[:2] for name in "abaa"]
    assert answers == [(503, b"injected"), (200, b"B"), (503, b"injected"), (200, b"A")]
    assert [s.attempt for s in server.requests] == [0, 0, 1, 2]


async def test_script_goes_by_the_place_in_the_log() -> None:
    rule = script(None, Fault.error(429, b"slow down"))
    async with Server.files({"a": b"A"}, fault=rule) as server:
        answers = [(await get(server.url + "a"))[:2] for _ in range(3)]
    assert answers == [(200, b"A"), (429, b"slow down"), (200, b"A")]
    assert [s.index for s in server.requests] == [0, 1, 2]


async def test_a_hang_lasts_until_the_client_hangs_up_and_delays_overlap() -> None:
    async with Server.files({"blob": DATA}, fault=always(Fault.hang(), names={"hang"})) as server:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await get(server.url + "hang")
        for _ in range(100):  # the server sees the client go
            if server.in_flight() == 0:
                break
            await asyncio.sleep(0.02)
        assert server.in_flight() == 0
        assert server.requests[0].status is None
        server.fault = always(Fault.delay(0.3))
        answers = await asyncio.gather(*(get(server.url + "blob") for _ in range(3)))
    assert [answer[:2] for answer in answers] == [(200, DATA)] * 3
    assert server.most_at_once() == 3


async def test_a_slow_tail_and_a_trickle_still_send_every_byte() -> None:
    rule = script(Fault.slow_tail(512), Fault.trickle(0.001))
    async with Server.files({"small": DATA[:50]}, fault=rule) as server:
        assert (await get(server.url + "small"))[:2] == (200, DATA[:50])
        assert (await get(server.url + "small"))[:2] == (200, DATA[:50])
    assert [s.sent for s in server.requests] == [50, 50]


def test_in_a_thread_for_sync_clients() -> None:
    with Server.files({"blob": DATA}) as server:
        assert any(t.name == "loopback-server" for t in threading.enumerate())
        with urllib.request.urlopen(server.url + "blob", timeout=5) as response:
            assert response.read() == DATA
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(server.url + "nope", timeout=5)
    assert [(s.name, s.status) for s in server.requests] == [("blob", 200), ("nope", 404)]
    assert not any(t.name.startswith("loopback-server") for t in threading.enumerate())


@pytest.mark.parametrize(
    ("header", "span"),
    [("bytes=0-0", (0, 1)), ("bytes=5-", (5, 10)), ("bytes=-3", (7, 10)), ("bytes=-", None)],
)
def test_byte_range(header: str, span: tuple[int, int] | None) -> None:
    assert byte_range(header, 10) == span
