"""`HttpClient.get_bytes` / `get_json` against a loopback server that misbehaves on cue."""

from __future__ import annotations

import itertools
import json
import pickle
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp import web

from datago.errors import SourceError
from datago.storage.http import (
    MAX_RETRY_AFTER_S,
    HttpClient,
    HttpStatusError,
    SignedUrl,
    backoff_delay,
    is_retryable,
    parse_retry_after,
)
from tests.helpers import Fault, Server, free_port, script

BODY = bytes(range(256)) * 40


STEPS = {
    "reset": Fault.reset(),
    "stall": Fault.hang(),  # no answer at all, until the client hangs up
    "trickle": Fault.trickle(0.05),  # a byte every 50 ms: never idle long, never done in time
    "truncate": Fault.cut(1000),
    "stall_body": Fault.stall(0),
    "error_stall_body": Fault("error_stall_body", status=404, body=BODY, at=0, then="hang"),
}


def step(kind: str | int) -> Fault:
    """The fault a test names: a status, or one of `STEPS`."""
    return Fault.error(kind) if isinstance(kind, int) else STEPS[kind]


@dataclass
class Served:
    """A server answering BODY at every path, and the URL the tests ask."""

    server: Server
    url: str

    def answer(self, *steps: str | int) -> None:
        """The n-th request gets `steps[n]`; those after the last one, BODY."""
        self.server.fault = script(*map(step, steps))

    @property
    def times(self) -> list[float]:
        return [seen.started for seen in self.server.requests]


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    async def body(request: web.Request) -> web.Response:
        return web.Response(body=BODY)

    async with Server.handler(body) as server:
        yield Served(server, server.url + "blob")


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    client = HttpClient(attempts=3, timeout_s=0.5, backoff_base_s=0.01)
    try:
        yield client
    finally:
        await client.close()


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
@pytest.mark.parametrize("attempts", [1, 2, 4])
async def test_a_retryable_status_is_asked_exactly_attempts_times(
    served: Served, status: int, attempts: int
) -> None:
    served.answer(*[status] * 10)
    http = HttpClient(attempts=attempts, backoff_base_s=0.01)
    try:
        with pytest.raises(HttpStatusError) as caught:
            await http.get_bytes(served.url)
    finally:
        await http.close()
    assert caught.value.status == status
    assert len(served.times) == attempts


async def test_backoff_doubles_between_attempts(served: Served) -> None:
    served.answer(*[500] * 3)
    http = HttpClient(attempts=4, backoff_base_s=0.2)
    try:
        assert await http.get_bytes(served.url) == BODY
    finally:
        await http.close()
    times = served.times
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert len(gaps) == 3
    # 0.4 s of slack for a loaded machine; a delay one step off (0.8 s extra at the 3rd) fails
    for attempt, gap in enumerate(gaps, start=1):
        assert backoff_delay(attempt, 0.2) <= gap < backoff_delay(attempt, 0.2) + 0.4
    assert [backoff_delay(n) for n in (1, 2, 3, 6, 7, 20)] == [0.1, 0.2, 0.4, 3.0, 3.0, 3.0]


async def test_throttling_backs_off_ten_times_longer_with_jitter(served: Served) -> None:
    served.answer(429, 503, 429)
    http = HttpClient(attempts=4, backoff_base_s=0.02)  # throttled: 0.2, 0.4, 0.8 s, jittered
    try:
        assert await http.get_bytes(served.url) == BODY
    finally:
        await http.close()
    gaps = [later - earlier for earlier, later in itertools.pairwise(served.times)]
    for attempt, gap in enumerate(gaps, start=1):
        assert 0.5 * backoff_delay(attempt, 0.2) <= gap < backoff_delay(attempt, 0.2) + 0.4


@pytest.mark.parametrize("status", [429, 503])
@pytest.mark.parametrize("form", ["seconds", "date"])
async def test_retry_after_is_waited_for_exactly(served: Served, status: int, form: str) -> None:
    when = datetime.now(UTC) + timedelta(seconds=2)
    header = "1" if form == "seconds" else format_datetime(when, usegmt=True)
    served.server.fault = script(Fault.error(status, Retry_After=header))
    http = HttpClient(attempts=2, backoff_base_s=0.001)  # the backoff alone: 10 ms at most
    try:
        assert await http.get_bytes(served.url) == BODY
    finally:
        await http.close()
    (gap,) = [later - earlier for earlier, later in itertools.pairwise(served.times)]
    # an HTTP-date has whole seconds: 2 s from now is 1 to 2 s away
    assert 0.95 <= gap < (1.5 if form == "seconds" else 2.5)


async def test_a_stream_honours_retry_after_when_it_resumes(served: Served) -> None:
    served.server.fault = script(Fault.cut(4000), Fault.error(503, Retry_After="1"))
    http = HttpClient(attempts=3, backoff_base_s=0.001)
    try:
        assert b"".join([chunk async for chunk in http.stream(served.url)]) == BODY
    finally:
        await http.close()
    requests = served.server.requests
    assert [seen.status for seen in requests] == [200, 503, 200]  # no Range here: read again
    assert 0.95 <= requests[2].started - requests[1].started < 1.5


async def test_a_retry_after_longer_than_the_cap_fails_at_once_naming_it(served: Served) -> None:
    served.server.fault = script(*[Fault.error(429, Retry_After="3600")] * 3)
    http = HttpClient(attempts=3, backoff_base_s=0.001)
    try:
        with pytest.raises(
            HttpStatusError, match=r"HTTP 429 \(Retry-After 3600 s: more than 60 s\)"
        ):
            await http.get_bytes(served.url)
    finally:
        await http.close()
    assert len(served.times) == 1
    assert MAX_RETRY_AFTER_S == 60


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), ("0", 0.0), (None, None), ("soon", None), ("-3", None), ("1.5", None)],
)
def test_retry_after_reads_delay_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_reads_an_http_date_and_a_past_one_is_now() -> None:
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 28 < (parse_retry_after(format_datetime(later, usegmt=True)) or 0) <= 30
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


async def test_a_signed_url_is_signed_for_every_attempt_and_never_named(served: Served) -> None:
    served.answer(500, 404)
    signed: list[str] = []

    async def sign() -> str:
        signed.append(f"{served.url}?sig=secret%2F{len(signed)}")
        return signed[-1]

    http = HttpClient(attempts=3, backoff_base_s=0.001)
    try:
        with pytest.raises(HttpStatusError) as caught:
            await http.get_bytes(SignedUrl("s3://bucket/blob", sign))
    finally:
        await http.close()
    assert [seen.query for seen in served.server.requests] == [
        {"sig": "secret/0"},
        {"sig": "secret/1"},
    ]
    assert str(caught.value) == "GET s3://bucket/blob: HTTP 404: injected"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 416])
async def test_a_client_error_is_not_retried(served: Served, http: HttpClient, status: int) -> None:
    served.answer(*[status] * 3)
    with pytest.raises(HttpStatusError, match=rf"GET {served.url}: HTTP {status}: injected$"):
        await http.get_bytes(served.url)
    assert len(served.times) == 1


@pytest.mark.parametrize("fault", ["reset", "truncate", "stall", "stall_body", 500])
async def test_a_transient_fault_is_retried_and_the_body_delivered_whole(
    served: Served, http: HttpClient, fault: str | int
) -> None:
    served.answer(fault, fault)
    start = time.monotonic()
    assert await http.get_bytes(served.url) == BODY
    assert len(served.times) == 3
    stalls = 2 if str(fault).startswith("stall") else 0
    assert time.monotonic() - start < 0.5 * stalls + 1.0  # a stall costs the 0.5 s timeout


@pytest.mark.parametrize("fault", ["stall", "stall_body", "trickle"])
async def test_a_request_stalled_every_time_fails_within_attempts_times_the_timeout(
    served: Served, fault: str
) -> None:
    served.answer(*[fault] * 3)
    http = HttpClient(attempts=3, timeout_s=0.25, backoff_base_s=0.01)
    start = time.monotonic()
    try:
        with pytest.raises(
            SourceError, match=r"after 3 attempt\(s\): no complete answer within 0.25s"
        ):
            await http.get_bytes(served.url)
    finally:
        await http.close()
    assert 0.75 <= time.monotonic() - start < 2.5  # a trickle alone would last ~500 s
    assert len(served.times) == 3


async def test_connection_refused_is_a_clear_error_after_the_attempts(http: HttpClient) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/blob"
    start = time.monotonic()
    with pytest.raises(
        SourceError,
        match=rf"GET {url} failed after 3 attempt\(s\): ClientConnectorError: "
        rf"Cannot connect to host 127.0.0.1:{port}",
    ) as caught:
        await http.get_bytes(url)
    assert time.monotonic() - start < 2
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


@pytest.mark.parametrize("url", ["/relative/path", "ftp://127.0.0.1/blob", "http://[::1"])
async def test_a_bad_url_is_not_retried(http: HttpClient, url: str) -> None:
    start = time.monotonic()
    with pytest.raises(SourceError, match=r"after 1 attempt\(s\)"):
        await http.get_bytes(url)
    assert time.monotonic() - start < 1.0


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (json.dumps({"detail": "page_size must be in [1, 2000]"}).encode(), "page_size must be"),
        (b"<h1>Not\n  Found</h1>", "<h1>Not Found</h1>"),
        (b"x" * 5000, "x" * 200),
        (b"\xff\xfe oops", "\ufffd\ufffd oops"),
        (b"", ""),
    ],
)
async def test_an_error_status_quotes_the_start_of_its_body(
    served: Served, http: HttpClient, body: bytes, detail: str
) -> None:
    served.server.fault = script(Fault.error(400, body))
    with pytest.raises(HttpStatusError) as caught:
        await http.get_bytes(served.url)
    assert caught.value.detail.startswith(detail)
    assert len(caught.value.detail) <= 200
    suffix = f": {caught.value.detail}" if detail else ""
    assert str(caught.value) == f"GET {served.url}: HTTP 400{suffix}"


async def test_an_error_whose_body_stalls_is_raised_without_waiting_for_it(
    served: Served,
) -> None:
    http = HttpClient(attempts=3, timeout_s=0.5, backoff_base_s=0.01, detail_wait_s=5.0)
    served.answer("error_stall_body")
    start = time.monotonic()
    try:
        with pytest.raises(HttpStatusError, match=r"HTTP 404$"):
            await http.get_bytes(served.url)
    finally:
        await http.close()
    assert time.monotonic() - start < 2.5  # the 0.5 s timeout, not the 5 s detail wait
    assert len(served.times) == 1


async def test_get_json_parses_and_a_non_json_body_is_a_source_error(
    served: Served, http: HttpClient
) -> None:
    with pytest.raises(SourceError, match=r"GET .*: the body is not JSON"):
        await http.get_json(served.url)
    assert len(served.times) == 1  # a bad body is not a network fault


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (HttpStatusError("u", 503), True),
        (HttpStatusError("u", 429), True),
        (HttpStatusError("u", 404), False),
        (aiohttp.ServerDisconnectedError(), True),
        (aiohttp.ClientPayloadError("cut"), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (aiohttp.InvalidURL("/x"), False),
        (aiohttp.NonHttpUrlClientError("ftp://x"), False),
        (ValueError("a bug"), False),
    ],
)
def test_is_retryable(error: BaseException, retryable: bool) -> None:
    assert is_retryable(error) is retryable


def test_a_status_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(HttpStatusError("http://h/x", 404, "Not found.")))
    assert (error.url, error.status, error.detail) == ("http://h/x", 404, "Not found.")
    assert str(error) == "GET http://h/x: HTTP 404: Not found."
