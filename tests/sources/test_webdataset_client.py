"""End to end: `DatagoClient` on webdataset shards, local and over loopback HTTP."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from datago import DatagoClient
from tests.helpers import (
    Fault,
    Server,
    always,
    sample_members,
    shard_files,
    small_png,
    write_shards,
    write_tar,
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
    members = {"png": small_png(1), "seg.png": small_png(2), "mask.png": small_png(3)}
    write_tar(tmp_path / "m.tar", [("k", members)])
    config = {
        "source_type": "webdataset",
        "source_config": {"url": str(tmp_path / "m.tar"), "reference_image_type": "png"},
    }
    with DatagoClient(config) as client:
        (sample,) = list(client)
    np.testing.assert_array_equal(sample.image.to_numpy(), pixels(small_png(1)))
    np.testing.assert_array_equal(
        sample.additional_images["seg.png"].to_numpy(), pixels(small_png(2))
    )
    assert set(sample.masks) == {"mask.png"}


async def test_client_over_http(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 4, 3)
    async with Server.files(files) as server:
        base = server.url
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


def test_concurrent_downloads_0_means_8_slots_end_to_end(tmp_path: Path) -> None:
    files, keys = shard_files(tmp_path, 10, 3)
    # Each answer comes after a pause: every slot starts its first shard meanwhile.
    with Server.files(files, fault=always(Fault.delay(0.5))) as server:
        base = server.url
        config = {
            "source_type": "webdataset",
            "source_config": {"url": base + "shard-{000..009}.tar", "concurrent_downloads": 0},
        }
        with DatagoClient(config) as client:
            ids = [sample.id for sample in client]
            stats = client.stats
    assert server.most_at_once() == 8
    # slot j streams shards j and j + 8; samples come round-robin over the 8 slots
    slots = [[k for s in (j, j + 8) if s < 10 for k in keys[3 * s : 3 * s + 3]] for j in range(8)]
    assert ids == [slot[i] for i in range(6) for slot in slots if i < len(slot)]
    assert (stats.samples, stats.skipped, stats.source_errors) == (30, 0, 0)
