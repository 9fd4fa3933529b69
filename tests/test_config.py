"""Config parsing: upstream configs run unchanged; bad keys and values name themselves."""

from __future__ import annotations

import json
import logging
import math
import os
import re
from typing import Any

import pytest

from datago import ConfigError, DatagoClient
from datago.config import (
    ClientConfig,
    DbSourceConfig,
    Environment,
    FileSourceConfig,
    ImageConfig,
    WebDatasetSourceConfig,
)

UPSTREAM_README_DB = {
    "source_type": "db",
    "source_config": {
        "sources": "COYO",
        "require_images": True,
        "page_size": 500,
        "has_attributes": "caption_coca,caption_cogvlm",
        "rank": 0,
        "world_size": 1,
    },
    "image_config": {
        "crop_and_resize": True,
        "default_image_size": 1024,
        "downsampling_ratio": 32,
        "min_aspect_ratio": 0.5,
        "max_aspect_ratio": 2.0,
        "pre_encode_images": False,
    },
    "prefetch_buffer_size": 128,
    "samples_buffer_size": 64,
    "limit": 2,
}
UPSTREAM_WDS_BENCH = {
    "source_type": "webdataset",
    "source_config": {
        "url": "https://example.invalid/shard-{00155..02480}.tar",
        "shuffle": True,
        "concurrent_downloads": 32,
        "auth_token": "token",
    },
    "prefetch_buffer_size": 256,
    "samples_buffer_size": 256,
    "limit": 1000,
}
UPSTREAM_FILES = {
    "source_type": "file",
    "source_config": {"root_path": "/data", "random_sampling": True, "rank": 0, "world_size": 1},
    "image_config": {
        "crop_and_resize": True,
        "default_image_size": 64,
        "downsampling_ratio": 16,
        "min_aspect_ratio": 0.5,
        "max_aspect_ratio": 2.0,
        "image_to_rgb8": True,
    },
    "limit": 10,
    "samples_buffer_size": 1,
}


@pytest.mark.parametrize("upstream", [UPSTREAM_README_DB, UPSTREAM_WDS_BENCH, UPSTREAM_FILES])
def test_upstream_configs_parse_and_round_trip(upstream: dict[str, Any]) -> None:
    config = ClientConfig.from_json(json.dumps(upstream))
    assert ClientConfig.from_dict(config.to_dict()) == config
    assert config.limit == upstream["limit"]


def test_upstream_defaults() -> None:
    config = ClientConfig.from_dict({"source_config": {"sources": "A", "page_size": 10}})
    assert config.source_type == "db"
    assert isinstance(config.source_config, DbSourceConfig)
    assert config.source_config.duplicate_state == 0
    assert config.image_config is None
    assert config.limit is None
    image = ImageConfig()
    assert (image.encode_format, image.jpeg_quality, image.crop_and_resize) == ("png", 92, False)
    wds = ClientConfig.from_dict(UPSTREAM_WDS_BENCH).source_config
    assert isinstance(wds, WebDatasetSourceConfig)
    assert wds.reference_image_type == "jpg"
    assert WebDatasetSourceConfig(url="x").downloads == 8
    files = ClientConfig.from_dict(UPSTREAM_FILES).source_config
    assert isinstance(files, FileSourceConfig) and files.random_sampling


def file_config(**changes: Any) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(json.dumps(UPSTREAM_FILES))
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        target = config
        for parent in parents:
            target = target[parent]
        target[key] = value
    return config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"limit": 0}, "limit must be > 0, got 0"),
        ({"limit": "10"}, "limit must be of type int or null, got '10'"),
        ({"samples_buffer_size": 0}, "samples_buffer_size must be > 0"),
        ({"prefetch_buffer_size": -1}, "prefetch_buffer_size must be > 0"),
        ({"source_type": "s3"}, "source_type must be one of"),
        ({"source_config__root_path": 3}, "source_config.root_path must be of type str"),
        (
            {"source_config__random_sampling": 1},
            "source_config.random_sampling must be of type bool",
        ),
        ({"source_config__rank": 2, "source_config__world_size": 2}, "source_config.rank must be"),
        ({"source_config__world_size": -1}, "source_config.world_size must be >= 0"),
        ({"image_config__downsampling_ratio": 0}, "image_config.downsampling_ratio must be > 0"),
        ({"image_config__default_image_size": 8}, "image_config.default_image_size must be >="),
        ({"image_config__min_aspect_ratio": 3.0}, "min_aspect_ratio and max_aspect_ratio"),
        ({"image_config__min_aspect_ratio": 0}, "min_aspect_ratio and max_aspect_ratio"),
        (
            {"image_config__min_aspect_ratio": 0.3, "image_config__max_aspect_ratio": 0.3},
            "min_aspect_ratio and max_aspect_ratio give no usable bucket table: no aspect-ratio",
        ),
        (
            {"image_config__max_aspect_ratio": 1e300},
            "max_aspect_ratio give no usable bucket table: aspect ratios [0.5, 1e+300] give over",
        ),
        ({"image_config__max_aspect_ratio": math.inf}, "max_aspect_ratio must be a finite number"),
        ({"image_config__min_aspect_ratio": math.nan}, "min_aspect_ratio must be a finite number"),
        ({"image_config__encode_format": "gif"}, "image_config.encode_format must be"),
        ({"image_config__jpeg_quality": 256}, "image_config.jpeg_quality must be in [0, 255]"),
        ({"image_config__max_image_pixels": 0}, "image_config.max_image_pixels must be >= 1"),
        ({"image_config": []}, "image_config must be a JSON object"),
    ],
)
def test_bad_configs_raise_value_error_naming_the_key(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        DatagoClient(file_config(**changes))


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"unknown_key": 1}, "'unknown_key'"),
        ({"limt": 3}, "'limt' (did you mean 'limit'?)"),
        ({"source_config__root_pth": "/x"}, "'source_config.root_pth' (did you mean 'root_path'?)"),
        ({"source_config__page_size": 10}, "'source_config.page_size' (a key of source_type 'db')"),
        ({"image_config__size": 3}, "'image_config.size'"),
    ],
)
def test_unknown_keys_are_ignored_with_one_warning_naming_the_closest_key(
    changes: dict[str, Any], named: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="datago.config"):
        config = ClientConfig.from_dict(file_config(**changes))
    assert config == ClientConfig.from_dict(file_config())
    assert [r.getMessage() for r in caplog.records] == [f"unknown config keys ignored: {named}"]
    with pytest.raises(ConfigError, match=re.escape(f"unknown config key {named}")):
        ClientConfig.from_dict(file_config(**changes), strict=True)


def test_keys_upstream_accepts_and_limits_it_does_not_impose_construct(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="datago.config"):
        newer = ClientConfig.from_dict(file_config(image_config__image_format="jpeg"))
        db = ClientConfig.from_dict({"source_config": {"sources": "A", "page_size": 5000}})
        quality = ClientConfig.from_dict(file_config(image_config__jpeg_quality=255))
    assert newer.image_config == ClientConfig.from_dict(file_config()).image_config
    assert isinstance(db.source_config, DbSourceConfig) and db.source_config.page_size == 5000
    assert quality.image_config is not None and quality.image_config.jpeg_quality == 255
    assert not caplog.records  # known keys: no warning


def test_bad_json_and_missing_keys() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        ClientConfig.from_json("{not json")
    with pytest.raises(ConfigError, match="config must be a JSON object"):
        ClientConfig.from_json("[1, 2]")
    with pytest.raises(ConfigError, match="source_config is required"):
        DatagoClient({"source_type": "file"})
    with pytest.raises(ConfigError, match=r"source_config\.root_path is required"):
        DatagoClient({"source_type": "file", "source_config": {}})
    with pytest.raises(ConfigError, match=r"source_config\.page_size is required"):
        DatagoClient({"source_config": {"sources": "A"}})
    with pytest.raises(ConfigError, match=r"source_config.page_size must be >= 1, got 0"):
        DatagoClient({"source_config": {"sources": "A", "page_size": 0}})


def test_image_configs_that_fail_at_the_first_sample_upstream_fail_at_construction() -> None:
    empty_table = file_config(
        image_config__default_image_size=224,
        image_config__min_aspect_ratio=0.3,
        image_config__max_aspect_ratio=0.3,
    )
    with pytest.raises(ConfigError, match=re.escape("224, downsampling ratio 16 and ratios [0.3")):
        DatagoClient(empty_table)
    text = json.dumps(file_config(image_config__max_aspect_ratio=math.inf))
    assert '"max_aspect_ratio": Infinity' in text  # JSON text that json.loads accepts
    with pytest.raises(ConfigError, match="max_aspect_ratio must be a finite number, got inf"):
        ClientConfig.from_json(text)


def test_environment_variables() -> None:
    env = Environment.from_env(
        {
            "DATAGO_MAX_TASKS": "5",
            "DATAGO_MAX_RETRIES": "7",
            "DATAROOM_API_URL": "http://127.0.0.1:1/api/",
            "DATAROOM_API_KEY": "k",
        }
    )
    assert (env.max_tasks, env.max_retries) == (5, 7)
    assert (env.dataroom_api_url, env.dataroom_api_key) == ("http://127.0.0.1:1/api/", "k")
    assert Environment.from_env({}).max_retries == 3


def test_bad_environment_values_fall_back_with_a_warning_as_upstream(
    caplog: pytest.LogCaptureFixture,
) -> None:
    defaults = Environment.from_env({})
    with caplog.at_level(logging.WARNING, logger="datago.config"):
        many = Environment.from_env({"DATAGO_MAX_TASKS": "many", "DATAGO_MAX_RETRIES": "x"})
        zero = Environment.from_env({"DATAGO_MAX_TASKS": "0", "DATAGO_MAX_RETRIES": "0"})
    assert (many.max_tasks, many.max_retries) == (defaults.max_tasks, 3)
    assert (zero.max_tasks, zero.max_retries) == (1, 1)  # upstream: one task at a time
    assert [r.getMessage() for r in caplog.records] == [
        f"environment variable DATAGO_MAX_TASKS='many' is not an integer; using {defaults.max_tasks}",
        "environment variable DATAGO_MAX_RETRIES='x' is not an integer; using 3",
        "environment variable DATAGO_MAX_TASKS=0 is below 1; using 1",
        "environment variable DATAGO_MAX_RETRIES=0 is below 1; using 1",
    ]


def test_default_tasks_follow_cpu_affinity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {1, 5, 6}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert Environment.from_env({}).max_tasks == 3
    assert Environment.from_env({"DATAGO_MAX_TASKS": "9"}).max_tasks == 9
