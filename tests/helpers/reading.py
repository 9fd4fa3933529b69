"""Reading what a loader gives: ids from a client, every sample of a webdataset source."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from datago import DatagoClient
from datago.config import Environment, WebDatasetSourceConfig
from datago.sources.base import Partition, RawSample, SourceContext, Split
from datago.sources.webdataset import WebDatasetSource
from datago.stats import Stats


def ids_of(client: DatagoClient, count: int | None = None) -> list[str]:
    """The ids of the next `count` samples (all that are left when None), by `get_sample`."""
    ids: list[str] = []
    while count is None or len(ids) < count:
        sample = client.get_sample()
        if sample is None:
            break
        ids.append(sample.id)
    return ids


FAST = Environment(backoff_base_s=0.01, stall_timeout_s=0.3)
"""Quick retries, and a stalled download fails after 0.3 s (the defaults: 0.1 s and 60 s)."""


async def iter_webdataset(
    source: WebDatasetSourceConfig, ctx: SourceContext, workers: Partition | None = None
) -> AsyncGenerator[RawSample, None]:
    """The raw samples of the webdataset node for part `workers` of the config's rank."""
    split = Split(source.rank, max(source.world_size, 1), workers or Partition())
    stream = WebDatasetSource().open(source, split, ctx, None)
    async with contextlib.aclosing(stream):
        async for raw, _ in stream:
            yield raw


async def collect_wds(
    source: WebDatasetSourceConfig,
    workers: Partition | None = None,
    epoch: int = 0,
    retries: int = 3,
) -> tuple[list[RawSample], Stats]:
    """Every sample the webdataset source yields (bounded in time, `FAST` retries), and the
    stats it left."""
    stats = Stats()
    with ThreadPoolExecutor(2) as executor:
        ctx = SourceContext(
            environment=replace(FAST, max_retries=retries),
            executor=executor,
            stats=stats,
            epoch=epoch,
        )
        async with asyncio.timeout(30):
            samples = [sample async for sample in iter_webdataset(source, ctx, workers)]
    return samples, stats


def datago_threads() -> list[threading.Thread]:
    """The loader's threads still alive (they are all named `datago...`)."""
    return [t for t in threading.enumerate() if t.name.startswith("datago")]
