"""HTTP GETs with retries: exponential backoff on 5xx, 408, 429, resets and timeouts.

`HttpClient.stream` reads a long body (a tar shard) in chunks and, after a failure mid-body,
resumes at the byte it reached: with `Range: bytes=N-` when the server answers 206, else by
reading the body again and dropping its first N bytes. Either way no byte is delivered twice;
a resource whose size, ETag or Last-Modified changes meanwhile is an error, not a splice.

Not retried: other 4xx statuses, malformed or non-HTTP URLs and TLS certificate errors, which
another attempt cannot fix. An error status quotes the start of its body (a 400's `detail`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

import aiohttp

from datago.errors import SourceError

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(\d+|\*)")
_PERMANENT = (
    aiohttp.InvalidURL,
    aiohttp.NonHttpUrlClientError,
    aiohttp.ClientConnectorCertificateError,
)
_DETAIL_BYTES = 200  # of an error answer's body, quoted in the error
_DETAIL_WAIT_S = 1.0
RESUME_PROGRESS_BYTES = 1 << 20
"""Bytes a failed `stream` attempt must have delivered to count as progress (not a failure
in a row): every resume then advances by at least that much."""
DRAIN_BYTES = 64 << 10
"""Most bytes `drain` reads and drops to keep a connection (a tar pads to 10 KiB)."""
DRAIN_WAIT_S = 1.0


class HttpStatusError(SourceError):
    """The server answered with an error status; `detail` is the start of its body, if any."""

    def __init__(self, url: str, status: int, detail: str = "") -> None:
        message = f"GET {url}: HTTP {status}"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.url = url
        self.status = status
        self.detail = detail

    def __reduce__(self) -> tuple[type[HttpStatusError], tuple[str, int, str]]:
        # Rebuilt from its fields, so it survives a trip out of a torch DataLoader worker.
        return type(self), (self.url, self.status, self.detail)


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt may succeed: transient statuses, resets, timeouts, bad bodies."""
    if isinstance(exc, HttpStatusError):
        return exc.status in RETRYABLE_STATUS
    if isinstance(exc, _PERMANENT):
        return False
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError)


def backoff_delay(attempt: int, base_s: float = 0.1, cap_s: float = 3.0) -> float:
    """Seconds to sleep before retry number `attempt` (1 for the first retry)."""
    return float(min(cap_s, base_s * 2 ** (attempt - 1)))


class HttpClient:
    """One aiohttp session per pass; `get_bytes` / `get_json` retry transient failures.

    `attempts` GETs at most per call; each `get_bytes` attempt must end within `timeout_s`
    (headers and body: a stalled answer fails and is retried; a call may ask for another
    bound), each `stream` read within `stall_timeout_s`.
    """

    def __init__(
        self,
        *,
        attempts: int,
        timeout_s: float = 60.0,
        max_connections: int = 128,
        backoff_base_s: float = 0.1,
        stall_timeout_s: float = 60.0,
    ) -> None:
        self.attempts = attempts
        self.backoff_base_s = backoff_base_s
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
        self, url: str, headers: Mapping[str, str] | None = None, timeout_s: float | None = None
    ) -> bytes:
        """The whole body of a successful GET; raises `SourceError` once attempts run out.

        `timeout_s` bounds each attempt instead of the client's `timeout_s`.
        """
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        timeout = self.timeout if timeout_s == self.timeout_s else _total_timeout(timeout_s)
        for attempt in range(1, self.attempts + 1):
            try:
                async with self.session.get(url, headers=headers, timeout=timeout) as response:
                    if response.status >= 400:
                        raise await _status_error(url, response)
                    return await response.read()
            except Exception as exc:
                if not is_retryable(exc) or attempt == self.attempts:
                    if isinstance(exc, SourceError):
                        raise
                    raise SourceError(
                        f"GET {url} failed after {attempt} attempt(s): {_describe(exc, timeout_s)}"
                    ) from exc
                delay = backoff_delay(attempt, self.backoff_base_s)
                logger.info("GET %s failed (%r); retry %d in %.2fs", url, exc, attempt, delay)
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
        self, url: str, headers: Mapping[str, str] | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The body of a GET in chunks as they arrive (not copied), resumed after a failure.

        `attempts` bounds the failures in a row; a failure after `RESUME_PROGRESS_BYTES` of
        progress starts the count again, so a long shard survives several resets, but a server
        that sends a few bytes and then resets, forever, fails the stream.
        """
        received = 0
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
                async with self.session.get(
                    url, headers=request_headers, timeout=self.stream_timeout
                ) as response:
                    if received and response.status == 416 and received == total:
                        return  # everything had arrived; the failure came after the last byte
                    if response.status >= 400:
                        raise await _status_error(url, response)
                    start, length = _body_range(url, response)
                    seen = response.headers.get("ETag") or response.headers.get("Last-Modified")
                    if (total is not None and length is not None and length != total) or (
                        version and seen and version != seen
                    ):
                        raise SourceError(f"GET {url}: the resource changed while resuming")
                    total = length if length is not None else total
                    version = version or seen
                    if start > received:
                        raise SourceError(
                            f"GET {url}: the server resumed at {start}, not {received}"
                        )
                    drop = received - start  # bytes sent again that were delivered already
                    async for chunk, _ in response.content.iter_chunks():
                        if drop >= len(chunk):
                            drop -= len(chunk)
                            continue
                        piece = chunk[drop:] if drop else chunk
                        drop = 0
                        received += len(piece)
                        delivered += len(piece)
                        yield piece
                    if total is not None and received < total:
                        raise aiohttp.ClientPayloadError(f"body ended at {received} of {total}")
                    return
            except Exception as exc:
                failures = 1 if delivered >= RESUME_PROGRESS_BYTES else failures + 1
                if not is_retryable(exc) or failures >= self.attempts:
                    if isinstance(exc, SourceError):
                        raise
                    raise SourceError(
                        f"GET {url} failed at byte {received} after {failures} attempt(s) "
                        f"in a row: {exc!r}"
                    ) from exc
                delay = backoff_delay(failures, self.backoff_base_s)
                logger.info(
                    "GET %s failed at byte %d (%r); retry in %.2fs", url, received, exc, delay
                )
                await asyncio.sleep(delay)


async def drain(chunks: AsyncIterator[bytes]) -> None:
    """Read and drop the rest of a `stream` body the caller no longer needs (a tar's padding).

    aiohttp puts a connection back in the pool only after the whole body was read, so a short
    rest (`DRAIN_BYTES`, within `DRAIN_WAIT_S`) is read; a longer or failing one is left for
    the caller to close.
    """
    left = DRAIN_BYTES
    with contextlib.suppress(SourceError, TimeoutError):
        async with asyncio.timeout(DRAIN_WAIT_S):
            async for chunk in chunks:
                left -= len(chunk)
                if left < 0:
                    return


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


async def _status_error(url: str, response: aiohttp.ClientResponse) -> HttpStatusError:
    """The error for an error answer, quoting its JSON `detail` or the start of its body."""
    head = b""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        async with asyncio.timeout(_DETAIL_WAIT_S):
            head = await response.content.read(_DETAIL_BYTES)
    text = head.decode("utf-8", "replace")
    with contextlib.suppress(ValueError):
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("detail"), str):
            text = data["detail"]
    return HttpStatusError(url, response.status, " ".join(text.split())[:_DETAIL_BYTES])


def _describe(exc: Exception, timeout_s: float) -> str:
    """A failure in words: a timeout says how long it waited, a refusal what it was."""
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no complete answer within {timeout_s:g}s ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
