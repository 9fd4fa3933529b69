"""`HttpClient.stream`: chunked bodies resumed after faults; `get_bytes`/`get_json` unchanged."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest
from aiohttp import web

from datago.errors import SourceError
from datago.storage import http
from datago.storage.http import HttpClient
from tests.helpers import Fault, Server, always, first

BODY = os.urandom(300_000)


async def read_all(client: HttpClient, url: str) -> bytes:
    async with asyncio.timeout(20):
        return b"".join([chunk async for chunk in client.stream(url)])


@pytest.mark.parametrize("ranges", [True, False])
async def test_a_cut_body_is_resumed_byte_exact(ranges: bool) -> None:
    files = {"blob": BODY, "json": json.dumps({"a": 1}).encode()}
    server = Server.files(files, ranges=ranges, fault=first(1, Fault.cut(123_457)))
    async with server:
        base = server.url
        client = HttpClient(attempts=2, backoff_base_s=0.01, stall_timeout_s=5)
        try:
            assert await read_all(client, base + "blob") == BODY
            assert await client.get_json(base + "json") == {"a": 1}  # shorter than the cut
        finally:
            await client.close()
    assert [seen.range for seen in server.requests] == [None, "bytes=123457-", None]


async def test_get_bytes_retries_server_errors() -> None:
    async with Server.files({"blob": BODY}, fault=first(2, Fault.error(500))) as server:
        base = server.url
        client = HttpClient(attempts=3, backoff_base_s=0.01)
        try:
            assert await client.get_bytes(base + "blob") == BODY
        finally:
            await client.close()
    assert len(server.requests) == 3


async def test_a_body_that_changes_size_while_resuming_is_an_error() -> None:
    sizes = iter([1000, 900])

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=bytes(next(sizes)))  # a 200 whatever the Range asked

    client = HttpClient(attempts=3, backoff_base_s=0.01)
    try:
        async with Server.handler(handle, fault=first(1, Fault.cut(500))) as server:
            with pytest.raises(SourceError, match="changed"):
                await read_all(client, server.url + "blob")
    finally:
        await client.close()
    assert server.requests[0].sent == 500  # cut there; the second answer is whole


async def test_a_body_replaced_while_resuming_is_an_error() -> None:
    versions = iter(['"v1"', '"v2"'])

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=bytes(1000), headers={"ETag": next(versions)})

    client = HttpClient(attempts=3, backoff_base_s=0.01)
    try:
        async with Server.handler(handle, fault=first(1, Fault.cut(500))) as server:
            with pytest.raises(SourceError, match="changed"):
                await read_all(client, server.url + "blob")
    finally:
        await client.close()
    assert [seen.headers.get("If-Range") for seen in server.requests] == [None, '"v1"']


def cutting_server(body: bytes, cut: int) -> Server:
    """Serves `body` with Range support, dropping every connection after `cut` body bytes."""
    return Server.files({"blob": body}, fault=always(Fault.cut(cut)))


def starts(server: Server) -> list[int]:
    return [seen.range_start for seen in server.requests]


async def test_a_long_body_survives_a_reset_after_each_megabyte() -> None:
    body = os.urandom(5 * http.RESUME_PROGRESS_BYTES + 1000)
    cut = http.RESUME_PROGRESS_BYTES + 1
    async with cutting_server(body, cut) as server:
        url = server.url + "blob"
        client = HttpClient(attempts=2, backoff_base_s=0.01, stall_timeout_s=5)
        try:
            assert await read_all(client, url) == body
        finally:
            await client.close()
    assert starts(server) == list(range(0, len(body), cut))  # 5 resets, each resumed


async def test_a_server_resetting_after_a_few_bytes_forever_fails_the_stream() -> None:
    body = os.urandom(200_000)
    started = time.monotonic()
    async with cutting_server(body, 100) as server:
        url = server.url + "blob"
        client = HttpClient(attempts=3, backoff_base_s=0.01, stall_timeout_s=5)
        try:
            with pytest.raises(SourceError, match=r"failed at byte 300 after 3 attempt\(s\)"):
                await read_all(client, url)
        finally:
            await client.close()
    assert starts(server) == [0, 100, 200]
    assert time.monotonic() - started < 5
