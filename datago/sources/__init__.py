"""Where samples come from: local files, webdataset tar shards, the dataroom API."""

from __future__ import annotations

from datago.config import (
    ClientConfig,
    DbSourceConfig,
    FileSourceConfig,
    WebDatasetSourceConfig,
)
from datago.sources.base import RawSample, SampleStream, SourceContext

__all__ = ["RawSample", "SampleStream", "SourceContext", "open_source"]


def open_source(config: ClientConfig, context: SourceContext) -> SampleStream:
    """The async stream of raw samples that `config.source_type` names."""
    source = config.source_config
    if isinstance(source, FileSourceConfig):
        from datago.sources.files import iter_files

        return iter_files(source, context)
    if isinstance(source, WebDatasetSourceConfig):
        from datago.sources.webdataset import iter_webdataset

        return iter_webdataset(source, context)
    if isinstance(source, DbSourceConfig):
        from datago.sources.dataroom import iter_dataroom

        return iter_dataroom(source, context)
    raise AssertionError(f"no source for {type(source).__name__}")
