"""datago: a pure-Python asyncio image data loader for training.

from datago import DatagoClient
with DatagoClient(config) as client:
    for sample in client:
        ...

The Rust wheel's surface is here too: `DatagoClient(json_text).get_sample()`,
`get_sample_auto_convert()`, `initialize_logging()`, `live_cleanup_threads()`.
"""

from datago._log import initialize_logging
from datago.client import DatagoClient
from datago.config import ClientConfig
from datago.engine import live_cleanup_threads
from datago.errors import (
    ClientClosedError,
    ConfigError,
    DatagoError,
    LoaderError,
    Skip,
    SourceError,
)
from datago.sample import ImagePayload, LatentPayload, Sample
from datago.stats import Stats

__all__ = [
    "ClientClosedError",
    "ClientConfig",
    "ConfigError",
    "DatagoClient",
    "DatagoError",
    "ImagePayload",
    "LatentPayload",
    "LoaderError",
    "Sample",
    "Skip",
    "SourceError",
    "Stats",
    "initialize_logging",
    "live_cleanup_threads",
]
