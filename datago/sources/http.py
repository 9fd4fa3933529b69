"""HTTP GETs with retries: exponential backoff on 5xx, 408, 429, resets and timeouts."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from datago.errors import SourceError

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))


class HttpStatusError(SourceError):
    """The server answered with an error status."""

    def __init__(self, url: str, status: int) -> None:
        super().__init__(f"GET {url}: HTTP {status}")
        self.url = url
        self.status = status


def is_retryable(exc: BaseException) -> bool:
    """Whether another attempt may succeed: transient statuses, resets, timeouts, bad bodies."""
    if isinstance(exc, HttpStatusError):
        return exc.status in RETRYABLE_STATUS
    return isinstance(exc, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError)


def backoff_delay(attempt: int, base_s: float = 0.1, cap_s: float = 3.0) -> float:
    """Seconds to sleep before retry number `attempt` (1 for the first retry)."""
    return float(min(cap_s, base_s * 2 ** (attempt - 1)))


class HttpClient:
    """One aiohttp session per pass; `get_bytes` / `get_json` retry transient failures."""

    def __init__(
        self,
        *,
        attempts: int,
        timeout_s: float = 60.0,
        max_connections: int = 128,
        backoff_base_s: float = 0.1,
    ) -> None:
        self.attempts = attempts
        self.backoff_base_s = backoff_base_s
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=min(timeout_s, 10.0))
        self.session = aiohttp.ClientSession(
            timeout=self.timeout,
            connector=aiohttp.TCPConnector(limit=max_connections),
            raise_for_status=False,
        )

    async def close(self) -> None:
        await self.session.close()

    async def get_bytes(self, url: str, headers: Mapping[str, str] | None = None) -> bytes:
        """The whole body of a successful GET; raises `SourceError` once attempts run out."""
        for attempt in range(1, self.attempts + 1):
            try:
                async with self.session.get(url, headers=headers) as response:
                    if response.status >= 400:
                        raise HttpStatusError(url, response.status)
                    return await response.read()
            except Exception as exc:
                if not is_retryable(exc) or attempt == self.attempts:
                    if isinstance(exc, SourceError):
                        raise
                    raise SourceError(
                        f"GET {url} failed after {attempt} attempt(s): {exc!r}"
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
