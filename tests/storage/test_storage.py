"""The storage protocol, the same for local files and http(s): ranged reads and streams,
listing, byte counts. HTTP runs against a loopback server, with and without `Range`."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from datago.errors import ConfigError, SourceError
from datago.storage import (
    Storage,
    StorageOptions,
    Storages,
    scheme_of,
    storage_for,
    storage_kind,
)
from tests.helpers import Server

BODY = os.urandom(3 << 20)


@contextlib.asynccontextmanager
async def storage_of(
    kind: str, tmp_path: Path, counted: list[int]
) -> AsyncIterator[tuple[Storage, str, Server | None]]:
    """A storage of `kind` ("local", "http", "http-no-range") and the URL of BODY in it."""
    (tmp_path / "blob").write_bytes(BODY)
    with ThreadPoolExecutor(2) as executor:
        options = StorageOptions(executor=executor, attempts=2, on_fetch=counted.append)
        if kind == "local":
            storage = storage_for(str(tmp_path / "blob"), options)
            try:
                yield storage, str(tmp_path / "blob"), None
            finally:
                await storage.close()
            return
        async with Server.files({"blob": BODY}, ranges=kind == "http") as server:
            storage = storage_for(server.url + "blob", options)
            try:
                yield storage, server.url + "blob", server
            finally:
                await storage.close()


KINDS = ["local", "http", "http-no-range"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("start", [0, 1, 1_000_003, len(BODY) - 5])
async def test_a_stream_from_any_byte_is_the_rest_exactly(
    tmp_path: Path, kind: str, start: int
) -> None:
    counted: list[int] = []
    async with storage_of(kind, tmp_path, counted) as (storage, url, server):
        data = b"".join([chunk async for chunk in storage.stream(url, start)])
    assert data == BODY[start:]
    sent = len(BODY) if kind == "http-no-range" else len(BODY) - start
    assert sum(counted) == sent  # what came over the wire, dropped bytes included
    if server is not None:
        assert [seen.range for seen in server.requests] == [f"bytes={start}-" if start else None]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(("start", "end"), [(0, None), (10, 20), (5000, None), (7, 7)])
async def test_a_read_is_the_range_asked(
    tmp_path: Path, kind: str, start: int, end: int | None
) -> None:
    async with storage_of(kind, tmp_path, []) as (storage, url, _):
        assert await storage.read(url, start, end) == BODY[start:end]


async def test_a_missing_object_is_a_source_error(tmp_path: Path) -> None:
    for kind in ("local", "http"):
        async with storage_of(kind, tmp_path, []) as (storage, url, _):
            with pytest.raises(SourceError):
                await storage.read(url + ".missing")


async def test_local_listing_is_recursive_and_sorted(tmp_path: Path) -> None:
    for name in ("b/2.jpg", "a.jpg", "b/1.txt", "c/d/e.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    storages = Storages(StorageOptions())
    try:
        listed = [path async for path in storages.for_url(str(tmp_path)).list(str(tmp_path))]
        with pytest.raises(SourceError, match="does not exist"):
            async for _ in storages.for_url("file:///nowhere").list("file:///nowhere"):
                pass
    finally:
        await storages.close()
    assert listed == [str(tmp_path / n) for n in ("a.jpg", "b/1.txt", "b/2.jpg", "c/d/e.png")]


def test_the_scheme_picks_the_storage() -> None:
    assert [scheme_of(u) for u in ("/a/b", "file:///a", "HTTPS://h/x", "s3://b/k", "c:x")] == [
        "",
        "file",
        "https",
        "s3",
        "",
    ]
    with pytest.raises(ConfigError, match="no storage for ftp://"):
        storage_for("ftp://host/key", StorageOptions())
    kinds = {
        "s3://b/k": "object",
        "GS://b/k": "object",
        "az://c/k": "object",
        "https://storage.googleapis.com/b/k.tar": "object",
        "https://b.s3.us-east-1.amazonaws.com/k.tar": "object",
        "https://b.s3.amazonaws.com/k.tar?X-Amz-Signature=00": "http",  # presigned: as given
        "https://acct.blob.core.windows.net/c/k.tar?sv=2024&sig=00": "http",  # SAS
        "http://127.0.0.1:8080/k.tar": "http",
        "/data/k.tar": "file",
        "file:///data/k.tar": "file",
    }
    assert {url: storage_kind(url) for url in kinds} == kinds
