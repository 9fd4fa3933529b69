"""`HttpClient.stream`: chunked bodies resumed after faults; `get_bytes`/`get_json` unchanged."""

from __future__ import annotations

import asyncio
import json
import os

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from datago.errors import SourceError
from datago.sources.http import HttpClient
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
