"""Local files (plain paths or `file://` URLs): reads and directory walks in the executor."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncGenerator, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from datago.errors import SourceError
from datago.storage import StorageOptions

logger = logging.getLogger(__name__)

CHUNK_BYTES = 4 << 20
"""Bytes per read of a `stream`: one executor round trip each."""
_LIST_BATCH = 1024  # paths handed from the walking thread to the loop per call


def local_path(url: str) -> str:
    """The file system path of a plain path or `file://` URL."""
    return url[7:] if url[:7].lower() == "file://" else url


class LocalStorage:
    """The `Storage` of local files; every blocking call runs in `options.executor`."""

    def __init__(self, options: StorageOptions) -> None:
        self.options = options
        self._own = None if options.executor else ThreadPoolExecutor(2, "datago-local")
        self.executor: Executor = options.executor or self._own  # type: ignore[assignment]

    def _fetched(self, size: int) -> None:
        if self.options.on_fetch is not None:
            self.options.on_fetch(size)

    async def list(self, prefix: str) -> AsyncGenerator[str, None]:
        """Files below the directory `prefix`, depth first, sorted by name (symlinked
        directories not followed); a missing or unreadable root is a `SourceError`."""
        root = local_path(prefix)  # as given, not normalised: the ids keep its spelling
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, _check_dir, Path(root))
        paths = walk(root)
        while batch := await loop.run_in_executor(self.executor, _next_batch, paths):
            for path in batch:
                yield path

    async def stream(self, url: str, start: int = 0) -> AsyncGenerator[bytes, None]:
        """The file from byte `start` (a seek), `CHUNK_BYTES` a read."""
        loop = asyncio.get_running_loop()
        opening = self.executor.submit(_open, local_path(url), start)
        try:
            file = await asyncio.wrap_future(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_close_opened)  # the thread may still be opening it
            raise
        except OSError as exc:
            raise SourceError(f"cannot read {url!r}: {exc}") from exc
        try:
            while True:
                try:
                    chunk = await loop.run_in_executor(self.executor, _read_chunk, file)
                except OSError as exc:
                    raise SourceError(f"cannot read {url!r}: {exc}") from exc
                if not chunk:
                    return
                self._fetched(len(chunk))
                yield chunk
        finally:
            file.close()

    async def read(self, url: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the file."""
        loop = asyncio.get_running_loop()
        path = local_path(url)
        try:
            data = await loop.run_in_executor(self.executor, _read, path, start, end)
        except OSError as exc:
            raise SourceError(f"cannot read {url!r}: {exc}") from exc
        self._fetched(len(data))
        return data

    async def close(self) -> None:
        """Files are closed as soon as they are read; only a private executor is left."""
        if self._own is not None:
            self._own.shutdown(wait=False, cancel_futures=True)


def walk(root: str) -> Iterator[str]:
    """File paths below `root`, depth first, sorted by name; symlinked dirs not followed."""
    try:
        entries = sorted(os.scandir(root), key=lambda entry: entry.name)
    except OSError as exc:
        logger.warning("cannot list %s: %s; skipped", root, exc)
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                yield from walk(entry.path)
            elif entry.is_file():
                yield entry.path
        except OSError as exc:
            logger.warning("cannot stat %s: %s; skipped", entry.path, exc)


def _check_dir(root: Path) -> None:
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise SourceError(f"{str(root)!r} {what}")


def _next_batch(paths: Iterator[str]) -> list[str]:
    return [path for _, path in zip(range(_LIST_BATCH), paths, strict=False)]


def _open(path: str, start: int) -> BinaryIO:
    file = open(path, "rb")  # noqa: SIM115 -- closed by the stream that owns it
    if start:
        file.seek(start)
    return file


def _read_chunk(file: BinaryIO) -> bytes:
    return file.read(CHUNK_BYTES)


def _close_opened(opening: Future[BinaryIO]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().close()


def _read(path: str, start: int, end: int | None) -> bytes:
    with open(path, "rb") as file:
        file.seek(start)
        return file.read() if end is None else file.read(max(end - start, 0))
