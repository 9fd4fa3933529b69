"""Object stores (S3, GCS, Azure Blob): obstore lists and signs, our HTTP client reads.

`ObjectStore` reads `s3://`, `gs://` and `az://` URLs (and the https forms `parse_url` knows).
A GET goes to a URL obstore signs afresh for each request, through `HttpClient`: the retries,
`Retry-After`, ranged resumes and ETag checks of http(s). A store without a key to sign with
(`_signer`) is read through obstore instead, with the same retry rules but no `Retry-After`
(obstore hides headers), as listings are. Retries are ours (obstore's are off):
`attempts` counts requests as `DATAGO_MAX_RETRIES` does. 401/403/404, a missing bucket or
credentials are not retried. Every failure is a `SourceError` naming the URL, never a signature.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import obstore
from obstore.exceptions import (
    GenericError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
    UnknownConfigurationKeyError,
)
from obstore.store import AzureStore, GCSStore, S3Store

from datago.errors import ConfigError, SourceError
from datago.storage import StorageOptions
from datago.storage.http import (
    MAX_RETRY_AFTER_S,
    RESUME_PROGRESS_BYTES,
    HttpClient,
    HttpStatusError,
    SignedUrl,
    retry_delay,
)
from datago.storage.object_store_url import ObjectLocation, parse_url

if TYPE_CHECKING:
    from obstore import GetOptions
    from obstore.store import ClientConfig

__all__ = ["ObjectLocation", "ObjectStore", "ObjectStoreError", "parse_url"]

T = TypeVar("T")

CHUNK_BYTES = 1 << 20
"""Smallest chunk a `stream` through obstore yields (but the last): obstore joins network frames
up to it (a signed stream yields them as they come, as http(s) does)."""
LIST_PAGE = 1000  # keys per listing batch: one S3/GCS/Azure page
SIGNED_FOR = timedelta(hours=1)  # each request has a URL of its own: it needs only minutes
_RETRYABLE_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
_STATUS = re.compile(r"status code: (\d{3})")
_ERROR_CODE = re.compile(r"<Code>(\w+)</Code>")
_NO_CONTAINER = ("NoSuchBucket", "ContainerNotFound", "bucket does not exist")
_CREDENTIAL_HINTS = ("/latest/api/token", "/latest/meta-data", "computeMetadata", "oauth2/token")
_CLIENT_KEYS = frozenset(
    {"allow_http", "allow_invalid_certificates", "connect_timeout", "read_timeout", "timeout"}
    | {"proxy_url", "proxy_excludes", "root_certificate", "user_agent", "default_headers"}
)
# Read by us from `env`; obstore reads the rest of each store's variables from the process.
_ENV_KEYS: dict[str, tuple[tuple[str, str], ...]] = {
    "s3": (
        ("AWS_ACCESS_KEY_ID", "access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "secret_access_key"),
        ("AWS_SESSION_TOKEN", "session_token"),
        ("AWS_DEFAULT_REGION", "region"),
        ("AWS_REGION", "region"),
        ("AWS_ENDPOINT_URL", "endpoint"),
        ("AWS_ENDPOINT_URL_S3", "endpoint"),
    ),
    "gcs": (("GOOGLE_APPLICATION_CREDENTIALS", "application_credentials"),),
    "azure": (
        ("AZURE_STORAGE_ACCOUNT_NAME", "account_name"),
        ("AZURE_STORAGE_ACCOUNT_KEY", "account_key"),
        ("AZURE_STORAGE_SAS_TOKEN", "sas_key"),
        ("AZURE_STORAGE_ENDPOINT", "endpoint"),
    ),
}
_CREDENTIAL_VARIABLES = {
    "s3": "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a web identity or instance role)",
    "gcs": "GOOGLE_APPLICATION_CREDENTIALS (or a metadata-server identity)",
    "azure": "AZURE_STORAGE_ACCOUNT_KEY or AZURE_STORAGE_SAS_TOKEN (or a managed identity)",
}
_CREDENTIAL_KEYS = (
    "access_key_id",
    "session_token",
    "application_credentials",
    "service_account_key",
    "account_key",
    "sas_key",
    "bearer_token",
)
_UNSIGNABLE_KEYS = ("sas_key", "request_payer", "sse_customer_key_base64")
"""A SAS token cannot sign a URL; the others are headers a signed URL would not carry."""
_QUIESCE_S = 0.02


@dataclass(frozen=True)
class _Bucket:
    """One bucket's obstore store, and how to sign a GET of a key (None: it cannot sign)."""

    store: Any
    sign: Callable[[str], Awaitable[str]] | None


class ObjectStore:
    """Object-store storage for every bucket its URLs name, sharing one configuration.

    `options` is a source's `storage_options`: obstore's keys for the store (`endpoint`,
    `region`, `access_key_id`, `account_name`, ...), its client keys (`allow_http`,
    `timeout`, ...), and `anonymous: true` for public buckets (requests are not signed).
    `env` supplies each store's standard variables; `options` win over it. An https URL is
    read unsigned unless credentials are configured or `anonymous` is false.
    """

    def __init__(
        self,
        *,
        attempts: int,
        options: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
        stall_timeout_s: float = 60.0,
        backoff_base_s: float = 0.1,
        throttle_base_s: float = 1.0,
        chunk_bytes: int = CHUNK_BYTES,
        on_fetch: Callable[[int], None] | None = None,
    ) -> None:
        if attempts < 1:
            raise ConfigError(f"attempts must be >= 1, got {attempts}")
        self.attempts = attempts
        self.on_fetch = on_fetch or _ignore
        self.options = dict(options or {})
        self.env = dict(env or {})
        self.timeout_s = timeout_s
        self.stall_timeout_s = stall_timeout_s
        self.backoff_base_s = backoff_base_s
        self.throttle_base_s = throttle_base_s
        self.chunk_bytes = chunk_bytes
        self._buckets: dict[tuple[str, str, str, bool], _Bucket] = {}
        self._http: HttpClient | None = None

    @classmethod
    def from_options(
        cls, options: StorageOptions, env: Mapping[str, str] = os.environ
    ) -> ObjectStore:
        """The store `storage_for` makes: `options.extra` is the source's `storage_options`."""
        return cls(
            attempts=options.attempts,
            options=options.extra,
            env=env,
            timeout_s=options.timeout_s,
            stall_timeout_s=options.stall_timeout_s,
            backoff_base_s=options.backoff_base_s,
            throttle_base_s=10 * options.backoff_base_s,
            on_fetch=options.on_fetch,
        )

    async def list(self, prefix_url: str) -> AsyncGenerator[str, None]:
        """The URLs of the objects under a prefix, page by page, in key order.

        A URL ending in `/` (or a bare bucket) lists that folder, recursively; otherwise
        the prefix is a plain string prefix (`s3://b/shards/train-` lists `train-*`). A
        failed page is asked again from the last key seen (start-after): no key twice.
        """
        location = parse_url(prefix_url)
        store = self._bucket(location).store
        key = location.key
        folder, after = key.rstrip("/"), None
        if key and not key.endswith("/"):  # a plain prefix: list from just before it
            folder, after = key.rpartition("/")[0], key[:-1] or None
        failures = 0
        while True:
            pages = obstore.list(store, folder or None, offset=after, chunk_size=LIST_PAGE)
            try:
                async for page in pages:
                    failures = 0
                    for meta in page:
                        path = after = meta["path"]
                        if path.startswith(key) and not path.endswith("/"):
                            yield location.url_of(path)
                        elif path > key:
                            return  # keys come sorted: nothing further can match
                return
            except Exception as exc:
                failures += 1
                retry, delay = self._verdict(exc, failures)
                if not retry:
                    raise _source_error("LIST", prefix_url, exc, failures) from exc
                await asyncio.sleep(delay)

    async def stream(self, url: str, start: int = 0) -> AsyncGenerator[bytes, None]:
        """The object's bytes from `start` on, in chunks, resumed with a ranged read on faults.

        `attempts` bounds the failures in a row; one after `RESUME_PROGRESS_BYTES` of
        progress starts the count again. An object that changes meanwhile is an error.
        """
        location = parse_url(url)
        bucket = self._bucket(location)
        if bucket.sign is None:
            chunks = self._stream_unsigned(bucket.store, location, url, start)
        else:
            chunks = self._client().stream(self._signed(bucket.sign, location, url), start=start)
        received = start
        try:
            async with aclosing(chunks):
                async for chunk in chunks:
                    received += len(chunk)
                    yield chunk
        except HttpStatusError as exc:
            if exc.status == 416 and await self._ends_at(bucket.store, location, url, received):
                return
            raise _source_error("GET", url, exc, self.attempts, received) from exc

    async def read(self, url: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of the object (to its end when `end` is None), in one piece;
        each attempt must end within `timeout_s`."""
        location = parse_url(url)
        bucket = self._bucket(location)
        if end is not None and end <= start:
            return b""
        if bucket.sign is None:
            return await self._read_unsigned(bucket.store, location, url, start, end)
        signed = self._signed(bucket.sign, location, url)
        try:
            return await self._client().get_bytes(signed, byte_range=(start, end))
        except HttpStatusError as exc:
            raise _source_error("GET", url, exc, self.attempts) from exc

    async def close(self) -> None:
        """Close the HTTP client and forget the stores; then let obstore's threads leave Python
        before the loop ends.

        CPython < 3.14 aborts the process if one of them re-enters Python while the
        interpreter exits (measured: 1 to 5 runs in 12 ended in SIGABRT without this pause).
        """
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._buckets.clear()
        await asyncio.sleep(_QUIESCE_S)

    def _client(self) -> HttpClient:
        """The HTTP client of signed GETs, made on first use (on the loop)."""
        if self._http is None:
            self._http = HttpClient(
                attempts=self.attempts,
                timeout_s=self.timeout_s,
                stall_timeout_s=self.stall_timeout_s,
                backoff_base_s=self.backoff_base_s,
                throttle_base_s=self.throttle_base_s,
                on_receive=self.on_fetch,
            )
        return self._http

    @staticmethod
    def _signed(
        sign: Callable[[str], Awaitable[str]], location: ObjectLocation, url: str
    ) -> SignedUrl:
        async def fresh() -> str:
            try:
                return await sign(location.key)
            except Exception as exc:  # no credentials, most likely: not worth a retry
                raise _source_error("GET", url, exc, 1) from exc

        return SignedUrl(url, fresh)

    async def _stream_unsigned(
        self, store: Any, location: ObjectLocation, url: str, start: int
    ) -> AsyncGenerator[bytes, None]:
        """`stream` through obstore, resumed after faults, pinned to the first ETag."""
        received, failures, etag = start, 0, None
        while True:
            delivered = 0
            options: GetOptions = {"range": {"offset": received}} if received else {}
            if etag:
                options["if_match"] = etag
            try:
                result = await obstore.get_async(store, location.key, options=options)
                etag = etag or result.meta["e_tag"]
                size = result.meta["size"]
                async for chunk in result.stream(min_chunk_size=self.chunk_bytes):
                    received += len(chunk)
                    delivered += len(chunk)
                    self.on_fetch(len(chunk))
                    yield chunk
                if received < size:
                    raise ConnectionError(f"the body ended at byte {received} of {size}")
                return
            except Exception as exc:
                if _status(exc) == 416 and await self._ends_at(store, location, url, received):
                    return
                failures = 1 if delivered >= RESUME_PROGRESS_BYTES else failures + 1
                retry, delay = self._verdict(exc, failures)
                if not retry:
                    raise _source_error("GET", url, exc, failures, received) from exc
                await asyncio.sleep(delay)

    async def _read_unsigned(
        self, store: Any, location: ObjectLocation, url: str, start: int, end: int | None
    ) -> bytes:
        """`read` through obstore."""
        options: GetOptions = {}
        if end is not None:
            options["range"] = (start, end)
        elif start:
            options["range"] = {"offset": start}

        async def attempt() -> bytes:
            async with asyncio.timeout(self.timeout_s):
                result = await obstore.get_async(store, location.key, options=options)
                return bytes(await result.bytes_async())

        data = await self._retrying("GET", url, attempt)
        self.on_fetch(len(data))
        return data

    async def _retrying(self, op: str, url: str, call: Callable[[], Awaitable[T]]) -> T:
        for attempt in range(1, self.attempts + 1):
            try:
                return await call()
            except Exception as exc:
                retry, delay = self._verdict(exc, attempt)
                if not retry:
                    raise _source_error(op, url, exc, attempt) from exc
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _verdict(self, exc: BaseException, failures: int) -> tuple[bool, float]:
        """Whether to try again after the `failures`-th failure in a row, and after how long."""
        if failures >= self.attempts or not _is_retryable(exc):
            return False, 0.0
        delay = retry_delay(failures, _status(exc), None, self.backoff_base_s, self.throttle_base_s)
        return True, delay

    async def _ends_at(self, store: Any, location: ObjectLocation, url: str, offset: int) -> bool:
        """After a 416: whether `offset` is the object's end (nothing left), not past it."""
        meta = await self._retrying("HEAD", url, lambda: obstore.head_async(store, location.key))
        if offset > meta["size"]:
            raise SourceError(f"GET {url}: offset {offset} is past the end ({meta['size']} bytes)")
        return bool(offset == meta["size"])

    def _bucket(self, location: ObjectLocation) -> _Bucket:
        """The store of a location's bucket and its signer, built once from `options`, `env`."""
        ident = (location.kind, location.bucket, location.account, location.quoted)
        bucket = self._buckets.get(ident)
        if bucket is None:
            bucket = self._buckets[ident] = self._build(location)
        return bucket

    def _build(self, location: ObjectLocation) -> _Bucket:
        config: dict[str, Any] = {}
        for variable, key in _ENV_KEYS[location.kind]:
            if self.env.get(variable):
                config[key] = self.env[variable]
        if location.region:
            config["region"] = location.region
        if location.account:
            config["account_name"] = location.account
        client: ClientConfig = {
            "connect_timeout": timedelta(seconds=min(self.timeout_s, 10.0)),
            "read_timeout": timedelta(seconds=self.stall_timeout_s),
            "timeout": timedelta(days=1),  # a stream may take hours; stalls end it
        }
        for key, value in self.options.items():
            if key in _CLIENT_KEYS:
                client[key] = value  # type: ignore[literal-required]
            elif key == "anonymous":
                config["skip_signature"] = bool(value)
            else:
                config["endpoint" if key == "endpoint_url" else key] = value
        if location.quoted and "skip_signature" not in config and not _has_credentials(config):
            config["skip_signature"] = True  # an https URL read as before, unsigned
        if str(config.get("endpoint") or config.get("base_url") or "").startswith("http://"):
            client.setdefault("allow_http", True)
        kinds = {"s3": S3Store, "gcs": GCSStore, "azure": AzureStore}
        try:
            store = kinds[location.kind](
                location.bucket,
                config=config,
                client_options=client,
                retry_config={"max_retries": 0},
            )
        except UnknownConfigurationKeyError as exc:
            raise ConfigError(f"storage_options: {_first_line(exc)}") from exc
        except Exception as exc:
            hint = ""
            if location.kind == "azure" and "account" in str(exc).lower():
                hint = "; set AZURE_STORAGE_ACCOUNT_NAME or storage_options account_name"
            raise SourceError(f"{location.url}: {_first_line(exc)}{hint}") from exc
        read_by_obstore = (  # a SAS token, or headers only obstore's requests carry
            any(key in config for key in _UNSIGNABLE_KEYS)
            or "default_headers" in client
            or self.env.get("AWS_REQUESTER_PAYS", "").lower() == "true"
        )
        return _Bucket(store, None if read_by_obstore else _signer(store, location.kind, config))


class ObjectStoreError(SourceError):
    """A failed object-store request; `status` is the HTTP status behind it, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    def __reduce__(self) -> tuple[type[ObjectStoreError], tuple[str, int | None]]:
        return type(self), (str(self), self.status)


def _signer(
    store: Any, kind: str, config: Mapping[str, Any]
) -> Callable[[str], Awaitable[str]] | None:
    """How to sign a GET of a key: at once with a key at hand, else on obstore's runtime (S3
    may fetch a role's keys first); None where nothing is signed, or signing would need a
    permission reading does not (GCS's signBlob, Azure's user delegation key)."""
    if config.get("skip_signature"):
        return None
    has_key = {
        "s3": "secret_access_key" in config,
        "gcs": _has_service_account_key(config),
        "azure": "account_key" in config,
    }[kind]
    if not has_key and kind != "s3":
        return None

    async def now(key: str) -> str:
        return obstore.sign(store, "GET", key, SIGNED_FOR)

    async def fetched(key: str) -> str:
        return await obstore.sign_async(store, "GET", key, SIGNED_FOR)

    return now if has_key else fetched


def _has_service_account_key(config: Mapping[str, Any]) -> bool:
    """Whether a GCS config holds a service account's private key (it signs locally)."""
    if "service_account_key" in config or "service_account" in config:
        return True
    path = config.get("application_credentials")
    if not path:
        return False
    try:
        with open(str(path), "rb") as file:
            return bool(json.load(file).get("type") == "service_account")
    except (OSError, ValueError, AttributeError):
        return False  # unreadable (obstore names it), or not a key (user credentials)


def _has_credentials(config: Mapping[str, Any]) -> bool:
    """Whether the store's config (from `env` and `options`) names credentials."""
    return any(key in config for key in _CREDENTIAL_KEYS)


def _ignore(size: int) -> None:
    pass


def _status(exc: BaseException) -> int | None:
    """The HTTP status behind an error, if the error came from an answer."""
    if isinstance(exc, HttpStatusError):
        return exc.status
    if isinstance(exc, FileNotFoundError):
        return 404
    if isinstance(exc, PermissionDeniedError):
        return 403
    if isinstance(exc, UnauthenticatedError):
        return 401
    if isinstance(exc, PreconditionError):
        return 412
    match = _STATUS.search(str(exc))
    return int(match[1]) if match else None


def _is_retryable(exc: BaseException) -> bool:
    if _is_credential_failure(exc):
        return False
    status = _status(exc)
    if status is not None:
        return status in _RETRYABLE_STATUSES
    if isinstance(exc, ValueError | ConfigError):
        return False
    # No answer: a refused or reset connection, a stall, a body cut short.
    return isinstance(exc, GenericError | OSError | TimeoutError)


def _is_credential_failure(exc: BaseException) -> bool:
    """Whether obstore failed to get credentials (from the instance metadata, say), not an
    answer from the bucket: a typed 401/403/404 is the bucket's."""
    if isinstance(exc, FileNotFoundError | PermissionDeniedError | UnauthenticatedError):
        return False
    text = str(exc)
    return any(hint in text for hint in _CREDENTIAL_HINTS) or "credential" in text.lower()


def _source_error(
    op: str, url: str, exc: BaseException, attempts: int, at_byte: int | None = None
) -> ObjectStoreError:
    """A one-line error naming the URL and the cause: the status, the store's code, the fix."""
    where = f" at byte {at_byte}" if at_byte else ""
    status, text = _status(exc), str(exc)
    code = _ERROR_CODE.search(text)
    detail = f" ({code[1]})" if code else ""
    if _is_credential_failure(exc):
        kind = parse_url(url).kind
        cause = (
            f"no credentials: {_CREDENTIAL_VARIABLES[kind]} not found, or set "
            f"storage_options anonymous=true for a public bucket ({_first_line(exc)})"
        )
    elif status == 404:
        missing = "bucket" if any(word in text for word in _NO_CONTAINER) else "object"
        cause = f"HTTP 404{detail}: the {missing} does not exist"
    elif status in (401, 403):
        cause = f"HTTP {status}{detail}: access denied; check the credentials and permissions"
    elif status == 412:
        cause = "the object changed while it was read (its ETag differs)"
    elif isinstance(exc, HttpStatusError) and (exc.retry_after or 0) > MAX_RETRY_AFTER_S:
        cause = (
            f"HTTP {status}{detail}: the store asked to retry after {exc.retry_after:.0f} s, "
            f"more than the {MAX_RETRY_AFTER_S:.0f} s datago waits"
        )
    elif status is not None:
        cause = f"HTTP {status}{detail} after {attempts} attempt(s)"
    else:
        cause = f"{type(exc).__name__} after {attempts} attempt(s): {_first_line(exc)}"
    return ObjectStoreError(f"{op} {url}{where}: {cause}", status)


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().split("\n", 1)[0][:300]
