"""Reading what a loader gives: ids from a client, every sample of a webdataset source."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from datago import DatagoClient
from datago.config import Environment, WebDatasetSourceConfig
from datago.sources.base import Partition, RawSample, SourceContext
from datago.sources.webdataset import iter_webdataset
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


async def collect_wds(
    source: WebDatasetSourceConfig,
    workers: Partition | None = None,
    epoch: int = 0,
    retries: int = 3,
) -> tuple[list[RawSample], Stats]:
    """Every sample the webdataset source yields (bounded in time), and the stats it left."""
    stats = Stats()
    with ThreadPoolExecutor(2) as executor:
        ctx = SourceContext(
            environment=Environment(max_retries=retries),
            executor=executor,
            stats=stats,
            epoch=epoch,
            workers=workers or Partition(),
        )
        async with asyncio.timeout(30):
            samples = [sample async for sample in iter_webdataset(source, ctx)]
    return samples, stats


def datago_threads() -> list[threading.Thread]:
    """The loader's threads still alive (they are all named `datago...`)."""
    return [t for t in threading.enumerate() if t.name.startswith("datago")]
