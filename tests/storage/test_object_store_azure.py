"""`ObjectStore` on `az://` against Azurite, Azure's storage emulator, on loopback.

Skipped when `azurite-blob` (npm package `azurite`) is not installed: set `$AZURITE_BLOB` to
its path or put it on PATH.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from datago import DatagoClient
from datago.errors import SourceError
from datago.storage.object_store import ObjectStore
from tests.helpers import path_of, small_jpeg, write_noisy_shards
from tests.helpers.object_stores import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    Azurite,
    azurite,
    azurite_command,
)

COMMAND = azurite_command()
pytestmark = pytest.mark.skipif(COMMAND is None, reason="azurite-blob is not installed")
BODY = os.urandom(2_500_000)
KEYS = ["d/a.tar", "d/b.tar", "d/sub/c.tar", "e.tar"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    assert COMMAND is not None
    with azurite(COMMAND, str(tmp_path_factory.mktemp("azurite"))) as emulator:
        emulator.create_container("cont")
        emulator.put("cont", "big.bin", BODY)
        for key in KEYS:
            emulator.put("cont", key, key.encode())
        shards = write_noisy_shards(tmp_path_factory.mktemp("shards"), 2, 5)
        for name, data in shards.items():
            emulator.put("cont", f"wds/{name}", data)
        for index in range(3):
            emulator.put("cont", f"imgs/{index}.jpg", small_jpeg(index))
        yield emulator


def make_store(server: Azurite, key: str = AZURITE_KEY) -> ObjectStore:
    options = {"endpoint": server.endpoint, "account_name": AZURITE_ACCOUNT, "account_key": key}
    return ObjectStore(attempts=2, options=options, backoff_base_s=0.01)


async def test_az_urls_read_stream_and_list(server: Azurite, tmp_path: Path) -> None:
    store = make_store(server)
    try:
        assert await store.read("az://cont/big.bin") == BODY
        chunks = [chunk async for chunk in store.stream("az://cont/big.bin", 777)]
        assert b"".join(chunks) == BODY[777:]
        assert [url async for url in store.list("az://cont/d/")] == [
            "az://cont/d/a.tar",
            "az://cont/d/b.tar",
            "az://cont/d/sub/c.tar",
        ]
        assert [url async for url in store.list("abfs://cont/e")] == ["abfs://cont/e.tar"]
    finally:
        await store.close()


async def test_azure_errors_name_the_url_and_the_status(server: Azurite) -> None:
    store = make_store(server)
    wrong = make_store(server, key=base64.b64encode(b"not the key").decode())
    try:
        with pytest.raises(SourceError) as blob:
            await store.read("az://cont/nope.tar")
        with pytest.raises(SourceError) as container:
            await store.read("az://nocont/x.tar")
        with pytest.raises(SourceError) as denied:
            await wrong.read("az://cont/big.bin")
    finally:
        await store.close()
        await wrong.close()
    assert str(blob.value) == (
        "GET az://cont/nope.tar: HTTP 404 (BlobNotFound): the object does not exist"
    )
    assert str(container.value) == (
        "GET az://nocont/x.tar: HTTP 404 (ContainerNotFound): the bucket does not exist"
    )
    assert str(denied.value).startswith("GET az://cont/big.bin: HTTP 403 (AuthorizationFailure)")


def test_the_sources_read_az_prefixes_through_the_client(server: Azurite) -> None:
    options = {
        "endpoint": server.endpoint,
        "account_name": AZURITE_ACCOUNT,
        "account_key": AZURITE_KEY,
    }
    shards = {"url": "az://cont/wds/", "concurrent_downloads": 1, "storage_options": options}
    with DatagoClient({"source_type": "webdataset", "source_config": shards}) as client:
        assert [sample.id for sample in client] == [f"s{i:04d}" for i in range(10)]
    images = {"root_path": "az://cont/imgs", "storage_options": options}
    with DatagoClient({"source_type": "file", "source_config": images}) as client:
        assert [path_of(sample.id) for sample in client] == [
            f"az://cont/imgs/{index}.jpg" for index in range(3)
        ]
