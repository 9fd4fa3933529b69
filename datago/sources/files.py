"""`source_type: "file"`: every image file below `root_path`, walked recursively.

`root_path` is a folder or a bucket prefix (`s3://`, `gs://`, `az://`; `storage_options`
configure the store). The walk (`Storage.list`; a bucket's listing pages) is in sorted
order, so the sequence is deterministic and the first sample arrives before the walk ends.
A sample's id is its path or URL (`root_path` joined with the path below it) as JSON text,
quotes included, as the Rust wheel emits it. Part `i` of `n` (rank x torch worker) takes
every n-th file from offset i: parts are disjoint and their union is the whole folder. The
decode thread reads local files; objects are read here, several at once (`_read_ahead`).
`random_sampling` lists everything, then shuffles this part with `seed` and the pass number
(on a bucket prefix the first sample waits for the whole listing; see the guide). A file
whose name cannot be an id (bytes that are not UTF-8) is a counted skip, as a bad tar member
name is.

Resume: the state is the index in this part's sequence and the path found there; a resumed
pass lists again (names only) and starts reading at that index. If the folder changed since
(another file at that index), it raises `SourceError` rather than skip or repeat samples.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
from collections import deque
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datago.config import FileSourceConfig
from datago.errors import SourceError
from datago.sources.base import Position, RawSample, SourceContext, Split, check_state
from datago.sources.wds_groups import name_fault
from datago.storage import Storage, scheme_of, storage_for, storage_kind

READ_AHEAD = 64
"""Most objects read at once from a bucket prefix (latency-bound: ~64 x 20 ms first bytes)."""
READ_AHEAD_BYTES = 64 << 20
"""About the most bytes read ahead: the window is this over the largest object so far."""
FIRST_WINDOW = 8  # objects read at once before any object's size is known
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


@dataclass(frozen=True, slots=True)
class FilePosition:
    """Right after the file at `index - 1` of this part's sequence, `path`."""

    index: int
    path: str

    def state(self) -> dict[str, Any]:
        return {"index": self.index, "after": self.path}


class FileSource:
    """The `file` node."""

    source_type = "file"
    config_type = FileSourceConfig
    seeks = True

    def resume_refusal(self, config: FileSourceConfig) -> str | None:
        return None

    def fingerprint(self, config: FileSourceConfig, split: Split) -> dict[str, Any]:
        return {"root_path": config.root_path, "random_sampling": config.random_sampling}

    async def open(
        self,
        config: FileSourceConfig,
        split: Split,
        context: SourceContext,
        state: Mapping[str, Any] | None,
    ) -> AsyncGenerator[tuple[RawSample, Position | None], None]:
        """One raw sample per image file (its id: `file_id`), from `state` on."""
        options = context.storage_options(
            timeout_s=context.environment.file_timeout_s,
            stall_timeout_s=context.environment.stall_timeout_s,
            max_connections=READ_AHEAD,
            extra=config.storage_options,
        )
        storage = storage_for(config.root_path, options)
        try:
            files = self._files(config, split, context, state, storage.list(config.root_path))
            if storage_kind(config.root_path) == "file":  # the decode thread reads the file
                async with contextlib.aclosing(files):
                    async for index, path in files:
                        raw = RawSample(id=file_id(path), source="filesystem", image=Path(path))
                        yield raw, FilePosition(index, path)
                return
            source = scheme_of(config.root_path)
            read = _read_ahead(files, storage, context)
            async with contextlib.aclosing(read):
                async for index, path, data in read:
                    raw = RawSample(id=file_id(path), source=source, image=data)
                    yield raw, FilePosition(index, path)
        finally:
            await storage.close()

    async def _files(
        self,
        config: FileSourceConfig,
        split: Split,
        context: SourceContext,
        state: Mapping[str, Any] | None,
        listing: AsyncGenerator[str, None],
    ) -> AsyncGenerator[tuple[int, str], None]:
        """This part's image files after `state`, each with its index in the part's sequence;
        a name that cannot be an id is a counted skip."""
        start = 0 if state is None else check_state(state, "index", int)
        paths = _images_of_part(listing, split)
        if config.random_sampling:
            every = [path async for path in paths]
            seed = None if config.seed is None else f"{config.seed}:{context.epoch}"
            random.Random(seed).shuffle(every)
            paths = _from_list(every)
        below_root = len(os.path.join(config.root_path, ""))
        index = 0
        async with contextlib.aclosing(paths):
            async for path in paths:
                index += 1
                if index <= start:
                    if index == start and state is not None:
                        _check_resumed_at(path, state)
                    continue
                fault = name_fault(path[below_root:])  # e.g. not UTF-8: no usable id
                if fault is None:
                    yield index, path
                else:
                    context.stats.skip("bad file name", path, fault)
        if index < start:
            raise SourceError(
                f"source_config.root_path {config.root_path!r} holds {index} images of "
                f"this part, fewer than the {start} of the saved state: it changed"
            )


async def _read_ahead(
    files: AsyncGenerator[tuple[int, str], None], storage: Storage, context: SourceContext
) -> AsyncGenerator[tuple[int, str, bytes], None]:
    """The files' bytes, in order, read a window at once: `READ_AHEAD` objects, fewer when
    they are big (`READ_AHEAD_BYTES`, at least 2); a file gone since the listing (404) is a
    counted skip, any other failure ends the stream."""
    pending: deque[tuple[int, str, asyncio.Task[bytes]]] = deque()
    window, largest = FIRST_WINDOW, 1

    async def take() -> tuple[int, str, bytes] | None:
        nonlocal window, largest
        index, path, task = pending.popleft()
        try:
            data = await task
            largest = max(largest, len(data))
            window = max(2, min(READ_AHEAD, READ_AHEAD_BYTES // largest))
            return index, path, data
        except SourceError as exc:
            if getattr(exc, "status", None) != 404:
                raise
            context.stats.skip("gone since listed", path, str(exc))
            return None

    try:
        async with contextlib.aclosing(files):
            async for index, path in files:
                pending.append((index, path, asyncio.create_task(storage.read(path))))
                while len(pending) >= window:
                    if (item := await take()) is not None:
                        yield item
        while pending:
            if (item := await take()) is not None:
                yield item
    finally:
        for *_, task in pending:
            task.cancel()
        await asyncio.gather(*(task for *_, task in pending), return_exceptions=True)


def file_id(path: str) -> str:
    """The id of a file: its path as JSON text, `"dir/a.png"` with the quotes, as the wheel."""
    return json.dumps(path, ensure_ascii=False)


def _check_resumed_at(path: str, state: Mapping[str, Any]) -> None:
    saved = check_state(state, "after", str)
    if path != saved:
        raise SourceError(
            f"source_config.root_path changed since the state was saved: the file at index "
            f"{state['index'] - 1} of this part is now {path!r}, not {saved!r}"
        )


async def _images_of_part(
    paths: AsyncGenerator[str, None], split: Split
) -> AsyncGenerator[str, None]:
    """The image files of this part: every `count`-th from `index`; listing errors named."""
    part = split.part
    position = 0
    async with contextlib.aclosing(paths):
        while True:
            try:
                path = await anext(paths)
            except StopAsyncIteration:
                return
            except SourceError as exc:
                raise SourceError(f"source_config.root_path {exc}") from exc
            if os.path.splitext(path)[1].lower() not in IMAGE_EXTENSIONS:
                continue
            if position % part.count == part.index:
                yield path
            position += 1


async def _from_list(paths: list[str]) -> AsyncGenerator[str, None]:
    for path in paths:
        yield path
