"""`HttpClient.stream`: chunked bodies resumed after faults; `get_bytes`/`get_json` unchanged."""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from datago.errors import SourceError
from datago.storage import http
from datago.storage.http import HttpClient
from tests.sources.test_webdataset_http import ShardServer, serving

BODY = os.urandom(300_000)


async def read_all(client: HttpClient, url: str) -> bytes:
    async with asyncio.timeout(20):
        return b"".join([chunk async for chunk in client.stream(url)])


@pytest.mark.parametrize("ranges", [True, False])
async def test_a_cut_body_is_resumed_byte_exact(ranges: bool) -> None:
    server = ShardServer({"blob": BODY, "json": json.dumps({"a": 1}).encode()}, ranges=ranges)
    server.cut_at = 123_457
    async with serving(server) as base:
        client = HttpClient(attempts=2, backoff_base_s=0.01, stall_timeout_s=5)
        try:
            assert await read_all(client, base + "blob") == BODY
            assert await client.get_json(base + "json") == {"a": 1}  # shorter than the cut
        finally:
            await client.close()
    assert [asked for _, asked, _ in server.requests] == [None, "bytes=123457-", None]


async def test_get_bytes_retries_server_errors() -> None:
    server = ShardServer({"blob": BODY}, fail_first=2)
    async with serving(server) as base:
        client = HttpClient(attempts=3, backoff_base_s=0.01)
        try:
            assert await client.get_bytes(base + "blob") == BODY
        finally:
            await client.close()
    assert len(server.requests) == 3


async def test_a_body_that_changes_size_while_resuming_is_an_error() -> None:
    sizes = iter([1000, 900])

    async def handle(request: web.Request) -> web.StreamResponse:
        size = next(sizes)
        response = web.StreamResponse(status=200)
        response.content_length = size
        await response.prepare(request)
        await response.write(bytes(size // 2))
        if size == 1000:
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write(bytes(size - size // 2))
        return response

    app = web.Application()
    app.router.add_get("/blob", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = HttpClient(attempts=3, backoff_base_s=0.01)
    try:
        with pytest.raises(SourceError, match="changed"):
            await read_all(client, str(server.make_url("/blob")))
    finally:
        await client.close()
        await server.close()


async def test_a_body_replaced_while_resuming_is_an_error() -> None:
    versions = iter(['"v1"', '"v2"'])
    asked: list[str | None] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        asked.append(request.headers.get("If-Range"))
        response = web.StreamResponse(status=200, headers={"ETag": next(versions)})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(bytes(500))
        if len(asked) == 1:
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write(bytes(500))
        return response

    app = web.Application()
    app.router.add_get("/blob", handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    client = HttpClient(attempts=3, backoff_base_s=0.01)
    try:
        with pytest.raises(SourceError, match="changed"):
            await read_all(client, str(server.make_url("/blob")))
    finally:
        await client.close()
        await server.close()
    assert asked == [None, '"v1"']


@dataclass
class CuttingServer:
    """Serves `body` with Range support, dropping every connection after `cut` body bytes."""

    body: bytes
    cut: int
    starts: list[int] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        start = int(request.headers.get("Range", "bytes=0-")[6:].rstrip("-"))
        self.starts.append(start)
        headers = {"Content-Range": f"bytes {start}-{len(self.body) - 1}/{len(self.body)}"}
        response = web.StreamResponse(status=206 if start else 200, headers=headers)
        response.content_length = len(self.body) - start
        await response.prepare(request)
        await response.write(self.body[start : start + self.cut])
        if start + self.cut < len(self.body):
            assert request.transport is not None
            request.transport.close()
        return response


async def test_a_long_body_survives_a_reset_after_each_megabyte() -> None:
    body = os.urandom(5 * http.RESUME_PROGRESS_BYTES + 1000)
    cut = http.RESUME_PROGRESS_BYTES + 1
    server = CuttingServer(body, cut)
    async with serving(server) as base:
        url = base + "blob"
        client = HttpClient(attempts=2, backoff_base_s=0.01, stall_timeout_s=5)
        try:
            assert await read_all(client, url) == body
        finally:
            await client.close()
    assert server.starts == list(range(0, len(body), cut))  # 5 resets, each resumed


async def test_a_server_resetting_after_a_few_bytes_forever_fails_the_stream() -> None:
    body = os.urandom(200_000)
    server = CuttingServer(body, 100)
    started = time.monotonic()
    async with serving(server) as base:
        url = base + "blob"
        client = HttpClient(attempts=3, backoff_base_s=0.01, stall_timeout_s=5)
        try:
            with pytest.raises(SourceError, match=r"failed at byte 300 after 3 attempt\(s\)"):
                await read_all(client, url)
        finally:
            await client.close()
    assert server.starts == [0, 100, 200]
    assert time.monotonic() - started < 5
