"""Where samples come from: one node per `source_type` (see `base.SourceNode`), registered here.

Config parsing, the client, the torch layer and the engine look a source up here; adding a
source is one node and one line below.
"""

from __future__ import annotations

from datago.sources.base import (
    Partition,
    Position,
    RawSample,
    SampleStream,
    SourceContext,
    SourceNode,
    Split,
)
from datago.sources.dataroom import DbSource
from datago.sources.files import FileSource
from datago.sources.webdataset import WebDatasetSource

__all__ = [
    "SOURCES",
    "Partition",
    "Position",
    "RawSample",
    "SampleStream",
    "SourceContext",
    "SourceNode",
    "Split",
    "node_of",
]

SOURCES: dict[str, SourceNode] = {
    node.source_type: node for node in (DbSource(), FileSource(), WebDatasetSource())
}
"""Every source node by its `source_type`."""


def node_of(source_type: str) -> SourceNode:
    """The node of `source_type` (a parsed config names a registered one)."""
    return SOURCES[source_type]
