"""A scripted source node, for tests that need a source to do exactly what they say."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from datago.config import FileSourceConfig
from datago.sources.base import RawSample, SourceContext, Split


class ScriptedSource:
    """A `file` source node that yields what `make(context)` yields and cannot seek: tests
    put it in `datago.sources.SOURCES` to script a source, or to resume by replay."""

    source_type = "file"
    seeks = False

    def __init__(self, make: Callable[[SourceContext], AsyncIterator[RawSample]]) -> None:
        self.make = make
        self.config_type = FileSourceConfig

    def resume_refusal(self, config: object) -> str | None:
        return None

    def fingerprint(self, config: object, split: Split) -> dict[str, Any]:
        return {}

    async def open(
        self, config: object, split: Split, context: SourceContext, state: object
    ) -> AsyncIterator[tuple[RawSample, None]]:
        assert state is None  # the engine replays a source that cannot seek
        async for raw in self.make(context):
            yield raw, None
