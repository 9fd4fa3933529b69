"""The exceptions datago raises, and the `Skip` it records instead for a sample it drops.

```
DatagoError(Exception)                        everything datago raises
├── ConfigError(DatagoError, ValueError)      bad config, raised by DatagoClient(...)
├── ClientClosedError(DatagoError, RuntimeError)  use after close()
└── LoaderError(DatagoError)                  fatal background failure, raised by the consumer
    └── SourceError(LoaderError)              listing, pagination or download failed for good
```
Inner refinements of `SourceError` (`HttpStatusError`, `TarFormatError`) may surface as it;
misuse of a call (an empty payload's pixels) raises a builtin `TypeError`/`ValueError`.
"""

from __future__ import annotations

from dataclasses import dataclass


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


@dataclass(frozen=True, slots=True)
class Skip:
    """One sample dropped while the stream goes on: logged, counted by `kind` in
    `client.stats.skip_reasons` and kept in `client.stats.recent_skips`."""

    kind: str
    """What went wrong: the exception's class (`DecodeError`, ...) or a source's phrase."""
    sample_id: str
    cause: str
    """Why, in words: the exception's message or what the source found."""
