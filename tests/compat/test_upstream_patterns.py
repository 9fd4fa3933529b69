"""The call patterns of upstream's README, `python/dataset.py`, `python/raw_types.py` and its
Python tests, written here (not copied) and run on real files, shards and the dataroom
server, asserting what comes out."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datago import DatagoClient, ImagePayload, initialize_logging
from tests.compat.conftest import db_config
from tests.helpers import path_of, photo, write_images


class WrapperDataset:
    """The calls upstream's `python/dataset.py` makes, in its order: construct from JSON text,
    `start()`, then `get_sample_auto_convert` or `get_sample` until a falsy sample or `limit`,
    `stop()` when dropped."""

    def __init__(self, config: dict[str, Any], return_python_types: bool = True) -> None:
        self.client = DatagoClient(json.dumps(config))
        self.client.start()
        self.len = config.get("limit", 1e9)
        self.count = 0
        self.next: Callable[[], Any] = (
            self.client.get_sample_auto_convert if return_python_types else self.client.get_sample
        )

    def __iter__(self) -> WrapperDataset:
        return self

    def __next__(self) -> Any:
        self.count += 1
        if self.count > self.len:
            raise StopIteration
        sample = self.next()
        if not sample:
            raise StopIteration
        return sample

    def __del__(self) -> None:
        self.client.stop()


@pytest.mark.parametrize("return_python_types", [True, False])
def test_dataset_wrapper_on_files(tmp_path: Path, return_python_types: bool) -> None:
    paths = write_images(tmp_path, 6)
    config = {
        "source_type": "file",
        "source_config": {"root_path": str(tmp_path), "rank": 0, "world_size": 1},
        "image_config": {
            "crop_and_resize": True,
            "default_image_size": 64,
            "downsampling_ratio": 16,
            "min_aspect_ratio": 0.5,
            "max_aspect_ratio": 2.0,
            "pre_encode_images": False,
        },
        "prefetch_buffer_size": 64,
        "samples_buffer_size": 128,
        "limit": 4,
    }
    items = list(WrapperDataset(config, return_python_types))
    assert len(items) == 4
    for item, expected_id in zip(items, paths, strict=False):
        if return_python_types:
            assert item["id"] == expected_id and isinstance(item["image"], Image.Image)
            size = item["image"].size
        else:
            assert item.id == expected_id and item.image.get_payload().channels == 3
            size = item.image.size
        assert size[0] % 16 == 0 and size[1] % 16 == 0 and 0.5 <= size[0] / size[1] <= 2.0


@pytest.mark.parametrize("return_python_types", [True, False])
def test_dataset_wrapper_on_webdataset_over_http(
    shards_url: str, return_python_types: bool
) -> None:
    config = {
        "source_type": "webdataset",
        "source_config": {"url": shards_url, "shuffle": True, "concurrent_downloads": 4},
        "prefetch_buffer_size": 32,
        "samples_buffer_size": 32,
        "limit": 3,
    }
    items = list(WrapperDataset(config, return_python_types))
    ids = [item["id"] if return_python_types else item.id for item in items]
    assert ids == ["s1", "s2", "s3"]
    if return_python_types:
        image = items[0]["image"]
        assert image.convert("RGB").mode == "RGB" and len(image.get_flattened_data()) == 24 * 16
        assert all(isinstance(value, str) for value in items[0]["attributes"].values())


@pytest.mark.parametrize("return_python_types", [True, False])
def test_dataset_wrapper_on_the_dataroom_server(db_env: str, return_python_types: bool) -> None:
    items = list(WrapperDataset(db_config(), return_python_types))
    assert len(items) == 4
    for item in items:
        if return_python_types:
            assert item["masks"]["segmentation_mask"].mode == "L"
            assert json.loads(item["attributes"]["caption_coca"]).startswith("a photo")
            continue
        attributes = json.loads(item.attributes)  # upstream's test_caption_and_image
        assert len(attributes["caption_coca"]) != len(attributes["caption_cogvlm"])
        payload = item.image.get_payload()
        assert item.image.height <= payload.original_height and payload.channels == 3
        assert item.image.mode == "RGB" and item.additional_images["masked_image"].mode == "RGB"
        assert item.masks["segmentation_mask"].mode == "L" and "v4_trainset_hq" in item.tags


def test_readme_patterns_for_each_source(
    tmp_path: Path, shards_url: str, db_env: str, fresh_logging: logging.Logger
) -> None:
    assert initialize_logging() is True  # "Respects RUST_LOG"; the wheel's default level
    assert initialize_logging(log_level="warn") is False
    write_images(tmp_path, 3)
    configs: list[dict[str, Any]] = [
        {
            "source_config": {"sources": "COYO", "page_size": 500, "rank": 0, "world_size": 1},
            "limit": 200,
            "samples_buffer_size": 32,
        },
        {
            "source_type": "file",
            "source_config": {"root_path": str(tmp_path), "random_sampling": False},
            "limit": 200,
            "samples_buffer_size": 32,
        },
        {
            "source_type": "webdataset",
            "source_config": {
                "url": shards_url,
                "random_sampling": False,
                "concurrent_downloads": 8,
            },
            "prefetch_buffer_size": 128,
            "samples_buffer_size": 64,
            "limit": 1_000_000,
        },
    ]
    for config, expected in zip(configs, (4, 3, 4), strict=True):
        client = DatagoClient(json.dumps(config))
        samples = [client.get_sample() for _ in range(10)]
        got = [sample for sample in samples if sample is not None]
        assert len(got) == expected and samples[expected:] == [None] * (10 - expected)
        # the README's db config asks for no image (`require_images` is false)
        assert all(
            bool(sample.image) == ("sources" not in config["source_config"]) for sample in got
        )


def test_raw_types_patterns(db_env: str, tmp_path: Path) -> None:
    sample = DatagoClient(json.dumps(db_config(has_latents="latent_vae"))).get_sample()
    assert sample is not None
    latent = sample.latents["latent_vae"]
    assert len(latent.data) == latent.len > 0  # raw_array_to_numpy's emptiness check
    np.testing.assert_array_equal(np.load(io.BytesIO(latent.data)), np.zeros((2, 3), np.float32))
    photo(10, 8).save(tmp_path / "a.png")
    config = file_config_encoded(tmp_path)
    encoded = DatagoClient(json.dumps(config)).get_sample()
    assert encoded is not None
    decoded = Image.open(io.BytesIO(encoded.image.get_payload().data))  # decode_image_payload
    assert decoded.mode == "RGB" and decoded.size == (10, 8)
    assert hasattr(encoded.image, "mode") and encoded.image.mode == "RGB"  # get_image_mode
    assert isinstance(encoded.image, ImagePayload)


def file_config_encoded(root: Path) -> dict[str, Any]:
    return {
        "source_type": "file",
        "source_config": {"root_path": str(root)},
        "image_config": {"crop_and_resize": False, "pre_encode_images": True},
        "limit": 2,
        "samples_buffer_size": 10,
    }


def test_upstream_test_patterns_lifecycle_threads_and_ranks(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 10)
    base = {
        "source_type": "file",
        "source_config": {"root_path": str(tmp_path), "rank": 0, "world_size": 1},
        "limit": 10,
        "samples_buffer_size": 20,
    }
    client = DatagoClient(json.dumps(base))
    client.start()
    client.start()
    client.stop()
    client.stop()
    del client  # test_client_drop_cleanup
    client = DatagoClient(json.dumps(base))
    results: list[str] = []

    def worker() -> None:  # test_concurrent_access: 3 threads x 3 get_sample()
        for _ in range(3):
            sample = client.get_sample()
            if sample:
                results.append(sample.id)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == paths[:9]  # each sample to exactly one reader
    client.stop()
    ranks = []
    for rank in range(2):
        source = {**base["source_config"], "rank": rank, "world_size": 2}  # type: ignore[dict-item]
        ranked = DatagoClient(json.dumps({**base, "source_config": source}))
        ranks.append([s.id for s in iter(ranked.get_sample, None)])
    assert not set(ranks[0]) & set(ranks[1]) and sorted(ranks[0] + ranks[1]) == paths
    shuffled = {**base["source_config"], "random_sampling": True}  # type: ignore[dict-item]
    orders = [
        [
            s.id
            for s in iter(
                DatagoClient(json.dumps({**base, "source_config": shuffled})).get_sample, None
            )
        ]
        for _ in range(3)
    ]
    assert len({tuple(order) for order in orders}) > 1 and sorted(orders[0]) == paths


@pytest.mark.parametrize("pre_encode", [True, False])
def test_sixteen_bit_and_rgba_with_image_to_rgb8(tmp_path: Path, pre_encode: bool) -> None:
    Image.new("RGB", (100, 100)).convert("I;16").save(tmp_path / "deep.png")
    Image.new("RGBA", (100, 100), (200, 100, 50, 128)).save(tmp_path / "alpha.png")
    config = {
        "source_type": "file",
        "source_config": {"root_path": str(tmp_path), "random_sampling": True},
        "image_config": {
            "crop_and_resize": False,
            "pre_encode_images": pre_encode,
            "image_to_rgb8": True,
        },
        "limit": 2,
    }
    client = DatagoClient(json.dumps(config))
    for _ in range(2):
        data = client.get_sample()
        assert data is not None
        payload = data.image.get_payload()
        assert (payload.width, payload.height, payload.bit_depth) == (100, 100, 8)
        if pre_encode:
            assert Image.open(io.BytesIO(bytes(payload.data))).mode == "RGB"
        expected = (164, 113, 88) if "alpha" in path_of(data.id) else (0, 0, 0)
        assert data.image.getpixel((0, 0)) == expected  # RGBA over grey 128, as upstream
