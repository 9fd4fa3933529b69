"""The exceptions datago raises.

```
DatagoError(Exception)                        everything datago raises
├── ConfigError(DatagoError, ValueError)      bad config, raised by DatagoClient(...)
├── ClientClosedError(DatagoError, RuntimeError)  use after close()
├── LoaderError(DatagoError)                  fatal background failure, raised by the consumer
│   └── SourceError(LoaderError)              listing, pagination or download failed for good
└── SampleError(DatagoError)                  one sample failed: counted, logged and skipped
```
"""

from __future__ import annotations


class DatagoError(Exception):
    """Base class of every exception datago raises."""


class ConfigError(DatagoError, ValueError):
    """The configuration is invalid; the message names the key and the value."""


class ClientClosedError(DatagoError, RuntimeError):
    """The client was closed and cannot be used any more."""


class LoaderError(DatagoError):
    """The loader failed in the background; raised at its place in the stream."""


class SourceError(LoaderError):
    """The source could not be read (missing folder, API unreachable, shard lost)."""


class SampleError(DatagoError):
    """One sample could not be produced; it is skipped and counted, never raised to the user."""
