"""datago: a pure-Python asyncio image data loader for training.

from datago import DatagoClient
with DatagoClient(config) as client:
    for sample in client:
        ...
"""

from datago._log import initialize_logging
from datago.client import DatagoClient
from datago.config import ClientConfig
from datago.errors import (
    ClientClosedError,
    ConfigError,
    DatagoError,
    LoaderError,
    SampleError,
    SourceError,
)
from datago.sample import ImagePayload, Sample
from datago.stats import Stats

__all__ = [
    "ClientClosedError",
    "ClientConfig",
    "ConfigError",
    "DatagoClient",
    "DatagoError",
    "ImagePayload",
    "LoaderError",
    "Sample",
    "SampleError",
    "SourceError",
    "Stats",
    "initialize_logging",
]
