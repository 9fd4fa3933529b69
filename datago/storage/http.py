"""HTTP GETs with retries: exponential backoff on 5xx, 408, 429, resets and timeouts.

Throttling (429, 503) waits what the answer's `Retry-After` asks, or else a ten times longer,
jittered backoff; a server asking for more than `MAX_RETRY_AFTER_S` fails the request at once.

`HttpClient.stream` reads a long body (a tar shard) in chunks, from any byte (`Range`), and,
after a failure mid-body, resumes at the byte it reached: with `Range: bytes=N-` when the
server answers 206, else by reading the body again and dropping its first N bytes. Either
way no byte is delivered twice; a resource whose size, ETag or Last-Modified changes
meanwhile is an error, not a splice. A stream closed early reads a short rest of its body
(a tar's padding), so that its connection goes back to the pool. `HttpStorage` is the
`datago.storage.Storage` over it.

Not retried: other 4xx statuses, malformed or non-HTTP URLs and TLS certificate errors, which
another attempt cannot fix. An error status quotes the start of its body (a 400's `detail`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, NoReturn

import aiohttp
from yarl import URL

from datago.errors import SourceError
from datago.storage import StorageOptions

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
THROTTLE_STATUS = frozenset({429, 503})
MAX_RETRY_AFTER_S = 60.0
"""The longest `Retry-After` waited for; a longer one fails the request at once, with it named."""
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
_PERMANENT = (
    aiohttp.InvalidURL,
    aiohttp.NonHttpUrlClientError,
    aiohttp.ClientConnectorCertificateError,
)
_DETAIL_BYTES = 200  # of an error answer's body, quoted in the error
RESUME_PROGRESS_BYTES = 1 << 20
"""Bytes a failed `stream` attempt must have delivered to count as progress (not a failure
in a row): every resume then advances by at least that much."""
DRAIN_BYTES = 64 << 10
"""Most bytes a stream closed early reads and drops to keep its connection (a tar pads to
10 KiB)."""


class HttpStatusError(SourceError):
    """The server answered with an error status; `detail` is the start of its body, if any,
    and `retry_after` the seconds its `Retry-After` header asked for."""

    def __init__(
        self, url: str, status: int, detail: str = "", retry_after: float | None = None
    ) -> None:
        message = f"GET {url}: HTTP {status}"
        if retry_after is not None and retry_after > MAX_RETRY_AFTER_S:
            message += f" (Retry-After {retry_after:.0f} s: more than {MAX_RETRY_AFTER_S:.0f} s)"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.url = url
        self.status = status
        self.detail = detail
        self.retry_after = retry_after

    def __reduce__(
        self,
    ) -> tuple[type[HttpStatusError], tuple[str, int, str, float | None]]:
        # Rebuilt from its fields, so it survives a trip out of a torch DataLoader worker.
        return type(self), (self.url, self.status, self.detail, self.retry_after)


@dataclass(frozen=True)
class SignedUrl:
    """A URL signed afresh for every request (each retry and resume); messages name `name`."""

    name: str
    sign: Callable[[], Awaitable[str]]


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt may succeed: transient statuses, resets, timeouts, bad bodies."""
    if isinstance(exc, HttpStatusError):
        too_long = exc.retry_after is not None and exc.retry_after > MAX_RETRY_AFTER_S
        return exc.status in RETRYABLE_STATUS and not too_long
    if isinstance(exc, _PERMANENT):
        return False
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError)


def backoff_delay(attempt: int, base_s: float = 0.1, cap_s: float = 3.0) -> float:
    """Seconds to sleep before retry number `attempt` (1 for the first retry)."""
    return float(min(cap_s, base_s * 2 ** (attempt - 1)))


def retry_delay(
    failures: int, status: int | None, retry_after: float | None, base_s: float, throttle_s: float
) -> float:
    """Seconds before the next try: what `Retry-After` asked, else the backoff, after throttling
    (429, 503) from `throttle_s`, doubling to 20 times it and jittered (clients spread out)."""
    if retry_after is not None:
        return retry_after
    if status in THROTTLE_STATUS:
        cap = max(20 * throttle_s, 3.0)
        return backoff_delay(failures, throttle_s, cap) * random.uniform(0.5, 1.0)
    return backoff_delay(failures, base_s)


def parse_retry_after(value: str | None) -> float | None:
    """The seconds a `Retry-After` header asks to wait (delay-seconds or an HTTP-date)."""
    value = (value or "").strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None  # absent or unreadable: the backoff decides
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class HttpClient:
    """One aiohttp session per pass; `get_bytes` / `get_json` retry transient failures.

    `attempts` GETs at most per call; each `get_bytes` attempt must end within `timeout_s`
    (headers and body: a stalled answer fails and is retried; a call may ask for another
    bound), each `stream` read within `stall_timeout_s`. An error answer's body is quoted if
    it comes within `detail_wait_s`; a stream closed early reads its rest within
    `drain_wait_s`. `on_receive` is called with the size of every body chunk received.
    Throttling backs off from `throttle_base_s` (10 x `backoff_base_s` by default).
    """

    def __init__(
        self,
        *,
        attempts: int,
        timeout_s: float = 60.0,
        max_connections: int = 128,
        backoff_base_s: float = 0.1,
        throttle_base_s: float | None = None,
        stall_timeout_s: float = 60.0,
        detail_wait_s: float = 1.0,
        drain_wait_s: float = 1.0,
        on_receive: Callable[[int], None] | None = None,
    ) -> None:
        self.attempts = attempts
        self.backoff_base_s = backoff_base_s
        self.throttle_base_s = 10 * backoff_base_s if throttle_base_s is None else throttle_base_s
        self.detail_wait_s = detail_wait_s
        self.drain_wait_s = drain_wait_s
        self.on_receive = on_receive or _ignore
        self.timeout_s = timeout_s
        self.timeout = _total_timeout(timeout_s)
        # A stream may take longer than any total timeout; it fails when no byte comes for a while.
        self.stream_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(stall_timeout_s, 10.0), sock_read=stall_timeout_s
        )
        self.session = aiohttp.ClientSession(
            timeout=self.timeout,
            connector=aiohttp.TCPConnector(limit=max_connections),
            raise_for_status=False,
        )

    async def close(self) -> None:
        await self.session.close()

    async def get_bytes(
        self,
        url: str | SignedUrl,
        headers: Mapping[str, str] | None = None,
        timeout_s: float | None = None,
        byte_range: tuple[int, int | None] = (0, None),
    ) -> bytes:
        """The whole body of a successful GET; raises `SourceError` once attempts run out.

        `timeout_s` bounds each attempt instead of the client's `timeout_s`; `byte_range`
        asks for bytes [start, end) only (end None: to the end).
        """
        name = _name(url)
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        timeout = self.timeout if timeout_s == self.timeout_s else _total_timeout(timeout_s)
        start, end = byte_range
        if start or end is not None:
            last = "" if end is None else str(end - 1)
            headers = {**(headers or {}), "Range": f"bytes={start}-{last}"}
            if end is not None and end <= start:
                return b""
        for attempt in range(1, self.attempts + 1):
            try:
                href = await _href(url)
                async with self.session.get(href, headers=headers, timeout=timeout) as response:
                    if response.status >= 400:
                        raise await self._status_error(name, response)
                    body = await response.read()
                    self.on_receive(len(body))
                    return _slice(name, response, body, start, end)
            except Exception as exc:
                if not is_retryable(exc) or attempt == self.attempts:
                    if isinstance(exc, SourceError):
                        raise
                    raise SourceError(
                        f"GET {name} failed after {attempt} attempt(s): {_describe(exc, timeout_s)}"
                    ) from exc
                delay = self._delay(attempt, exc)
                logger.info("GET %s failed (%r); retry %d in %.2fs", name, exc, attempt, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # the loop returns or raises

    async def get_json(self, url: str, headers: Mapping[str, str] | None = None) -> Any:
        """GET and parse JSON; a body that is not JSON is a `SourceError`."""
        body = await self.get_bytes(url, headers)
        try:
            return json.loads(body)
        except ValueError as exc:
            raise SourceError(f"GET {url}: the body is not JSON ({exc})") from exc

    async def stream(
        self, url: str | SignedUrl, headers: Mapping[str, str] | None = None, start: int = 0
    ) -> AsyncGenerator[bytes, None]:
        """The body of a GET from byte `start`, in chunks as they arrive (not copied), resumed
        after a failure.

        `attempts` bounds the failures in a row; a failure after `RESUME_PROGRESS_BYTES` of
        progress starts the count again, so a long shard survives several resets, but a server
        that sends a few bytes and then resets, forever, fails the stream.
        """
        name = _name(url)
        received = start
        total: int | None = None
        version: str | None = None  # ETag or Last-Modified of the first answer
        failures = 0
        while True:
            # identity: byte offsets must be those of the resource, not of a compressed body
            request_headers = {"Accept-Encoding": "identity", **(headers or {})}
            if received:
                request_headers["Range"] = f"bytes={received}-"
                if version and not version.startswith("W/"):
                    request_headers["If-Range"] = version  # a changed resource comes whole
            delivered = 0  # by this attempt
            try:
                href = await _href(url)
                async with self.session.get(
                    href, headers=request_headers, timeout=self.stream_timeout
                ) as response:
                    if received and response.status == 416 and received == total:
                        return  # everything had arrived; the failure came after the last byte
                    if response.status >= 400:
                        raise await self._status_error(name, response)
                    begin, length = _body_range(name, response)
                    seen = response.headers.get("ETag") or response.headers.get("Last-Modified")
                    if (total is not None and length is not None and length != total) or (
                        version and seen and version != seen
                    ):
                        raise SourceError(f"GET {name}: the resource changed while resuming")
                    total = length if length is not None else total
                    version = version or seen
                    if begin > received:
                        raise SourceError(
                            f"GET {name}: the server resumed at {begin}, not {received}"
                        )
                    drop = received - begin  # bytes before the wanted one: skipped unread
                    async for chunk, _ in response.content.iter_chunks():
                        self.on_receive(len(chunk))
                        if drop >= len(chunk):
                            drop -= len(chunk)
                            continue
                        piece = chunk[drop:] if drop else chunk
                        drop = 0
                        received += len(piece)
                        delivered += len(piece)
                        try:
                            yield piece
                        except GeneratorExit:  # closed early: keep the connection if cheap
                            await self._drain(response, total, received)
                            raise
                    if total is not None and received < total:
                        raise aiohttp.ClientPayloadError(f"body ended at {received} of {total}")
                    return
            except Exception as exc:
                failures = 1 if delivered >= RESUME_PROGRESS_BYTES else failures + 1
                if not is_retryable(exc) or failures >= self.attempts:
                    if isinstance(exc, SourceError):
                        raise
                    raise SourceError(
                        f"GET {name} failed at byte {received} after {failures} attempt(s) "
                        f"in a row: {exc!r}"
                    ) from exc
                delay = self._delay(failures, exc)
                logger.info(
                    "GET %s failed at byte %d (%r); retry in %.2fs", name, received, exc, delay
                )
                await asyncio.sleep(delay)

    def _delay(self, failures: int, exc: BaseException) -> float:
        """Seconds to wait after the `failures`-th failure in a row."""
        status, retry_after = (
            (exc.status, exc.retry_after) if isinstance(exc, HttpStatusError) else (None, None)
        )
        return retry_delay(failures, status, retry_after, self.backoff_base_s, self.throttle_base_s)

    async def _drain(self, response: aiohttp.ClientResponse, total: int | None, at: int) -> None:
        """Read and drop the rest of a body the caller no longer needs (a tar's padding).

        aiohttp puts a connection back in the pool only after the whole body was read, so a
        short rest (`DRAIN_BYTES`, within `drain_wait_s`) is read; a longer or failing one
        closes the connection.
        """
        if total is None or total - at > DRAIN_BYTES:
            return
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with asyncio.timeout(self.drain_wait_s):
                self.on_receive(len(await response.content.read()))

    async def _status_error(self, url: str, response: aiohttp.ClientResponse) -> HttpStatusError:
        """The error for an error answer, quoting its JSON `detail` or the start of its body."""
        head = b""
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with asyncio.timeout(self.detail_wait_s):
                head = await response.content.read(_DETAIL_BYTES)
        text = head.decode("utf-8", "replace")
        with contextlib.suppress(ValueError):
            data = json.loads(text)
            if isinstance(data, dict) and isinstance(data.get("detail"), str):
                text = data["detail"]
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        detail = " ".join(text.split())[:_DETAIL_BYTES]
        return HttpStatusError(url, response.status, detail, retry_after)


class HttpStorage:
    """The `Storage` of http(s) URLs: one `HttpClient` with `options.headers` on every GET."""

    def __init__(self, options: StorageOptions) -> None:
        self.headers = dict(options.headers)
        self.client = HttpClient(
            attempts=options.attempts,
            timeout_s=options.timeout_s,
            max_connections=options.max_connections,
            backoff_base_s=options.backoff_base_s,
            stall_timeout_s=options.stall_timeout_s,
            on_receive=options.on_fetch,
        )

    async def list(self, prefix: str) -> AsyncGenerator[str, None]:
        """HTTP has no listing: name the objects (e.g. with a brace pattern)."""
        _cannot_list(prefix)
        yield prefix  # pragma: no cover -- makes this an async generator

    def stream(self, url: str, start: int = 0) -> AsyncGenerator[bytes, None]:
        return self.client.stream(url, self.headers, start)

    async def read(self, url: str, start: int = 0, end: int | None = None) -> bytes:
        return await self.client.get_bytes(url, self.headers, byte_range=(start, end))

    async def close(self) -> None:
        await self.client.close()


def _cannot_list(prefix: str) -> NoReturn:
    raise SourceError(f"cannot list {prefix!r}: http(s) servers have no listing")


def _ignore(size: int) -> None:
    pass


def _name(url: str | SignedUrl) -> str:
    return url if isinstance(url, str) else url.name


async def _href(url: str | SignedUrl) -> str | URL:
    """What to GET: the URL, or a fresh signature of it, sent exactly as signed."""
    return url if isinstance(url, str) else URL(await url.sign(), encoded=True)


def _slice(
    url: str, response: aiohttp.ClientResponse, body: bytes, start: int, end: int | None
) -> bytes:
    """Bytes [start, end) of the resource from a ranged answer: a 206, or a whole 200 body."""
    if not start and end is None:
        return body
    begin, _ = _body_range(url, response)
    if begin > start:
        raise SourceError(f"GET {url}: the server answered from byte {begin}, not {start}")
    return body[start - begin : None if end is None else end - begin]


def _total_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """Headers and body within `seconds`, the connection within 10 s of them."""
    return aiohttp.ClientTimeout(total=seconds, sock_connect=min(seconds, 10.0))


def _body_range(url: str, response: aiohttp.ClientResponse) -> tuple[int, int | None]:
    """Where the body starts in the resource, and the resource's full size if known."""
    if response.status != 206:
        return 0, response.content_length
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if match is None:
        raise SourceError(f"GET {url}: unusable Content-Range in a 206 answer")
    return int(match[1]), None if match[2] == "*" else int(match[2])


def _describe(exc: Exception, timeout_s: float) -> str:
    """A failure in words: a timeout says how long it waited, a refusal what it was."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no complete answer within {timeout_s:g}s ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
