"""Loader configs for tests: a `file` source over a folder, a webdataset source config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datago.config import WebDatasetSourceConfig


def file_config(root: Path, **overrides: object) -> dict[str, object]:
    """A `file` source config on `root`; split and sampling keys go to `source_config`."""
    source = {"root_path": str(root)}
    config: dict[str, object] = {"source_type": "file", "source_config": source}
    for key, value in overrides.items():
        if key in ("random_sampling", "rank", "world_size", "seed"):
            source[key] = value  # type: ignore[assignment]
        else:
            config[key] = value
    return config


def wds_source(url: str | list[str], **options: Any) -> WebDatasetSourceConfig:
    """A webdataset source config, one download at a time unless told otherwise."""
    settings: dict[str, Any] = {"concurrent_downloads": 1, **options}
    return WebDatasetSourceConfig(url=url, **settings)
