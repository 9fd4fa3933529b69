"""`source_type: "file"`: every image file below `root_path`, walked recursively.

The walk runs in the executor, one directory listing at a time, in sorted order, so the
sequence is deterministic and the first sample arrives before the walk ends. A sample's id
is its path (`root_path` joined with the path below it) as JSON text, quotes included, as
the Rust wheel emits it: `json.loads(sample.id)` is the path. Part `i` of
`n` (rank x torch worker) takes every n-th file from offset i: parts are disjoint and
their union is the whole folder. `random_sampling` lists everything, then shuffles this
part with `seed` and the pass number. A file whose name cannot be an id (bytes that are not
UTF-8) is a counted skip, as a bad tar member name is.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from datago.config import FileSourceConfig
from datago.errors import SourceError
from datago.sources.base import RawSample, SourceContext
from datago.sources.wds_groups import name_fault

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_BATCH = 1024  # paths handed from the walking thread to the loop per call


async def iter_files(config: FileSourceConfig, ctx: SourceContext) -> AsyncIterator[RawSample]:
    """Yield one raw sample per image file; its id is the path as JSON text (quotes
    included), as the Rust wheel gives it."""
    root = config.root_path  # as given, not normalised: ids keep its spelling, as the wheel's
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(ctx.executor, _check_root, Path(root))
    part = ctx.workers.within_rank(config.rank, config.world_size)
    paths = _paths_of_part(walk_images(root), part.index, part.count)
    if config.random_sampling:
        every = await loop.run_in_executor(ctx.executor, list, paths)
        seed = None if config.seed is None else f"{config.seed}:{ctx.epoch}"
        random.Random(seed).shuffle(every)
        paths = iter(every)
    below_root = len(os.path.join(root, ""))
    while batch := await loop.run_in_executor(ctx.executor, _next_batch, paths):
        for path in batch:
            fault = name_fault(path[below_root:])  # e.g. bytes that are not UTF-8: no usable id
            if fault is None:
                yield RawSample(id=file_id(path), source="filesystem", image=Path(path))
            else:
                ctx.stats.skip(path, f"bad file name: {fault}")


def file_id(path: str) -> str:
    """The id of a file: its path as JSON text, `"dir/a.png"` with the quotes, as the wheel."""
    return json.dumps(path, ensure_ascii=False)


def _check_root(root: Path) -> None:
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise SourceError(f"source_config.root_path {str(root)!r} {what}")


def walk_images(root: str) -> Iterator[str]:
    """Image file paths below `root`, depth first, sorted by name; symlinked dirs not followed."""
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError as exc:
        logger.warning("cannot list %s: %s; skipped", root, exc)
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from walk_images(entry.path)
            elif entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                yield entry.path
        except OSError as exc:
            logger.warning("cannot stat %s: %s; skipped", entry.path, exc)


def _paths_of_part(paths: Iterator[str], index: int, count: int) -> Iterator[str]:
    for position, path in enumerate(paths):
        if position % count == index:
            yield path


def _next_batch(paths: Iterator[str]) -> list[str]:
    return [path for _, path in zip(range(_BATCH), paths, strict=False)]
