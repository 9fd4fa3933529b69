"""Where bytes live: one small protocol over local files, http(s) and object stores.

A source asks `storage_for(url, options)` for the `Storage` of a URL and never learns which
one it got. Every implementation offers:

- `list(prefix)`: the object URLs (local: file paths) below `prefix`, sorted, recursively.
- `stream(url, start=0)`: the bytes of `url` from byte `start` to its end, in chunks as they
  arrive. Retries, backoff and resuming after a fault (HTTP `Range`) happen inside: the
  chunks are the resource's bytes exactly once, in order, or a `SourceError`. `start` is
  a ranged read (`Range: bytes=start-`, a `seek` on disk, a ranged GET on object stores);
  where the server ignores `Range`, the body is read from its start and the first `start`
  bytes are dropped here, so the caller never sees the difference.
- `read(url, start=0, end=None)`: the bytes [start, end) (to the end when `end` is None) in
  one piece, with the same retries.
- `close()`: release connections and sessions; the storage is not used after.

`list` and `stream` return async generators (callers `aclose()` them to stop early: an HTTP
stream then reads a short rest of its body so that its connection is reused).

Implementations count the bytes they receive through `options.on_fetch` (the pass's
`stats.bytes_fetched`). Errors are `SourceError`s (`datago.errors`); a 401/403/404 or its
object-store equivalent is not retried. The scheme decides the implementation:
`s3://`, `gs://`, `az://` (and their aliases), and an https URL of S3, GCS or Azure Blob
without a query string (a presigned or SAS URL has one) ->
`datago.storage.object_store.ObjectStore`, configured by `options.extra` (a source's
`storage_options`) and the standard environment variables; other `http://`/`https://` ->
`datago.storage.http.HttpStorage`; `file://` or a plain path ->
`datago.storage.local.LocalStorage`. Heavy clients (aiohttp, obstore) import lazily, inside
`storage_for`. A source holds its storages in a `Storages` (one per kind) and closes them.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

from datago.errors import ConfigError

__all__ = [
    "Storage",
    "StorageOptions",
    "Storages",
    "is_http",
    "scheme_of",
    "storage_for",
    "storage_kind",
]


class Storage(Protocol):
    """Bytes of URLs of one kind; see the module docstring for the contract."""

    def list(self, prefix: str) -> AsyncGenerator[str, None]: ...

    def stream(self, url: str, start: int = 0) -> AsyncGenerator[bytes, None]: ...

    async def read(self, url: str, start: int = 0, end: int | None = None) -> bytes: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageOptions:
    """How a storage reads: retries and timeouts, headers, and where blocking I/O runs."""

    executor: Executor | None = None
    """Blocking reads (local files) run here; None: the loop's default executor."""
    attempts: int = 3
    """Tries per request (`DATAGO_MAX_RETRIES`); a stream counts failures in a row."""
    backoff_base_s: float = 0.1
    timeout_s: float = 60.0
    """One whole `read` attempt, headers and body."""
    stall_timeout_s: float = 60.0
    """A `stream` attempt fails (and is resumed) when no byte comes for this long."""
    max_connections: int = 128
    headers: Mapping[str, str] = field(default_factory=dict)
    """Sent with every HTTP request (e.g. `Authorization`)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Store-specific settings (object stores: credentials, endpoint, region)."""
    on_fetch: Callable[[int], None] | None = None
    """Called with the size of every chunk received (on the event loop)."""


def scheme_of(url: str) -> str:
    """The lower-case scheme of `url` ("" for a plain path); schemes are case-insensitive."""
    head, sep, _ = url.partition("://")
    return head.lower() if sep and head.isalnum() else ""


def is_http(url: str) -> bool:
    return scheme_of(url) in ("http", "https")


def storage_kind(url: str) -> str:
    """Which storage reads `url`: "object", "http" or "file"; `ConfigError` for none."""
    from datago.storage.object_store_url import OBJECT_SCHEMES, is_object_store_url

    scheme = scheme_of(url)
    if scheme in OBJECT_SCHEMES:
        return "object"
    if scheme in ("http", "https"):
        signed = "?" in url  # presigned or SAS: a plain GET, as given
        return "object" if not signed and is_object_store_url(url) else "http"
    if scheme in ("", "file"):
        return "file"
    raise ConfigError(
        f"no storage for {scheme}:// URLs ({url!r}); use a path, http(s), s3://, gs:// or az://"
    )


def storage_for(url: str, options: StorageOptions) -> Storage:
    """A new storage able to read `url` (and every URL of the same kind); close it after."""
    kind = storage_kind(url)
    if kind == "object":
        try:
            from datago.storage.object_store import ObjectStore
        except ImportError as exc:  # no obstore wheel for this platform
            raise ConfigError(f"{url}: object stores need obstore ({exc})") from exc
        return ObjectStore.from_options(options)
    if kind == "http":
        from datago.storage.http import HttpStorage

        return HttpStorage(options)
    from datago.storage.local import LocalStorage

    return LocalStorage(options)


class Storages:
    """The storages a source uses, one per kind, made on first use with the same options."""

    def __init__(self, options: StorageOptions) -> None:
        self.options = options
        self._by_kind: dict[str, Storage] = {}

    def for_url(self, url: str) -> Storage:
        kind = storage_kind(url)
        if kind not in self._by_kind:
            self._by_kind[kind] = storage_for(url, self.options)
        return self._by_kind[kind]

    async def close(self) -> None:
        for storage in self._by_kind.values():
            await storage.close()
        self._by_kind.clear()
