"""End to end: `DatagoClient` on webdataset shards, local and over loopback HTTP."""

from __future__ import annotations

import asyncio
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiohttp import web
from PIL import Image

from datago import DatagoClient
from tests.sources.test_webdataset import png, sample_members, write_shards, write_tar
from tests.sources.test_webdataset_http import (
    ShardServer,
    serving,
    serving_in_thread,
    shard_files,
)


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def test_client_decodes_local_shards_with_a_limit(tmp_path: Path) -> None:
    pattern, keys = write_shards(tmp_path, 3, 4)
    config = {
        "source_type": "webdataset",
        "source_config": {"url": pattern, "concurrent_downloads": 1},
        "limit": 10,
    }
    with DatagoClient(config) as client:
        samples = list(client)
    assert [s.id for s in samples] == keys[:10]
    for index, sample in enumerate(samples):
        expected = pixels(sample_members(index)["jpg"])
        np.testing.assert_array_equal(sample.image.to_numpy(), expected)
        members = sample_members(index)
        assert json.loads(sample.attributes) == {
            "cls": members["cls"].decode(),
            "json": members["json"].decode(),
            "txt": members["txt"].decode(),
        }
        assert json.loads(sample.attributes_dict["json"])["index"] == index


def test_client_masks_and_extra_images_share_the_bucket(tmp_path: Path) -> None:
    members = {"png": png(1), "seg.png": png(2), "mask.png": png(3)}
    write_tar(tmp_path / "m.tar", [("k", members)])
    config = {
        "source_type": "webdataset",
        "source_config": {"url": str(tmp_path / "m.tar"), "reference_image_type": "png"},
    }
    with DatagoClient(config) as client:
        (sample,) = list(client)
    np.testing.assert_array_equal(sample.image.to_numpy(), pixels(png(1)))
    np.testing.assert_array_equal(sample.additional_images["seg.png"].to_numpy(), pixels(png(2)))
    assert set(sample.masks) == {"mask.png"}


async def test_client_over_http(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 4, 3)
    async with serving(ShardServer(files)) as base:
        config = {
            "source_type": "webdataset",
            "source_config": {"url": base + "shard-{000..003}.tar"},
        }

        def consume() -> list[str]:
            with DatagoClient(config) as client:
                return [sample.id for sample in client]

        # The sync client blocks: it runs in a thread while this loop serves the shards.
        ids = await asyncio.wait_for(asyncio.to_thread(consume), 30)
    assert sorted(ids) == keys


@dataclass
class OverlapServer:
    """Serves `files` after a pause, recording the most requests it had in flight at once."""

    files: dict[str, bytes]
    in_flight: int = 0
    most: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.5)  # every slot starts its first shard meanwhile
            return web.Response(body=self.files[request.match_info["name"]])
        finally:
            self.in_flight -= 1


def test_concurrent_downloads_0_means_8_slots_end_to_end(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 10, 3)
    server = OverlapServer(files)
    with serving_in_thread(server) as base:
        config = {
            "source_type": "webdataset",
            "source_config": {"url": base + "shard-{000..009}.tar", "concurrent_downloads": 0},
        }
        with DatagoClient(config) as client:
            ids = [sample.id for sample in client]
            stats = client.stats
    assert server.most == 8
    # slot j streams shards j and j + 8; samples come round-robin over the 8 slots
    slots = [[k for s in (j, j + 8) if s < 10 for k in keys[3 * s : 3 * s + 3]] for j in range(8)]
    assert ids == [slot[i] for i in range(6) for slot in slots if i < len(slot)]
    assert (stats.samples, stats.skipped, stats.source_errors) == (30, 0, 0)
