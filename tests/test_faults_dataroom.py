"""The `db` source end to end under network faults: `DatagoClient` against the folder server.

The server runs in its own thread, so the test's consumer can block like a user's. A seeded
fault rule breaks ~10 % of the requests, pages and media alike, in a way fixed by the seed
and the URL (not by arrival order): 5xx, resets, stalls before the headers or mid-body, and
bodies cut short of their Content-Length. A transient fault never hits one URL as many
times as there are attempts, so every sample must come through exactly once.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from datago import DatagoClient, SourceError
from datago.config import Environment
from datago.dataroom_server import make_app
from tests.helpers import Fault, Logged, Server, free_port, write_catalogue_with_latents

TOKEN = "fault-token"
TIMEOUT_S = 0.5  # page and file timeouts during these tests: a stall costs this much
KINDS = ("500", "503", "reset", "stall_headers", "stall_body", "truncate")


@dataclass
class Faults:
    """A fault rule that breaks requests: at random (seeded, per URL and attempt) or always."""

    rate: float = 0.0
    seed: int = 0
    in_a_row: int = 2  # transient faults per URL at most: one less than the attempts
    always: dict[Callable[[Logged], bool], int] = field(default_factory=dict)
    rewrite: dict[Callable[[Logged], bool], Callable[[Logged, bytes], bytes]] = field(
        default_factory=dict
    )
    media_delay_s: float = 0.0
    only: Callable[[str], str | None] | None = None
    """When set, the fault for each request key, every time (replaces the random draw)."""
    attempts: collections.Counter[str] = field(default_factory=collections.Counter)
    queries: list[dict[str, str]] = field(default_factory=list)
    injected: list[tuple[str, str]] = field(default_factory=list)

    def pick(self, key: str, attempt: int) -> str | None:
        if self.only is not None:
            return self.only(key)
        digest = hashlib.sha256(f"{self.seed}:{key}:{attempt}".encode()).digest()
        if attempt >= self.in_a_row or int.from_bytes(digest[:8]) / 2**64 >= self.rate:
            return None
        return KINDS[digest[8] % len(KINDS)]

    def __call__(self, seen: Logged) -> Fault | None:
        """The fault rule of the loopback `Server`: what to do to this request."""
        key, attempt = seen.path_qs, self.attempts[seen.path_qs]
        self.attempts[key] += 1
        self.queries.append(dict(seen.query))
        for matches, status in self.always.items():
            if matches(seen):
                return Fault.error(status, json.dumps({"detail": "injected for good"}).encode())
        delay_s = self.media_delay_s if seen.path.startswith("/media/") else 0.0
        kind = self.pick(key, attempt)
        if kind is None:
            for matches, change in self.rewrite.items():
                if matches(seen):
                    return replace(Fault.change(partial(change, seen)), delay_s=delay_s)
            return Fault.delay(delay_s) if delay_s else None
        self.injected.append((key, kind))
        return replace(INJECTED[kind], delay_s=delay_s)


INJECTED = {
    "500": Fault.error(500),
    "503": Fault.error(503),
    "reset": Fault.reset(),
    "stall_headers": Fault.hang(),
    "stall_body": Fault.stall(0.5),  # half of the body, then nothing
    "truncate": Fault.cut(0.5),
}


@pytest.fixture
def catalogue(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return write_catalogue_with_latents(tmp_path / "data")


@pytest.fixture
def faults() -> Faults:
    return Faults()


@pytest.fixture
def server(
    tmp_path: Path,
    catalogue: dict[str, Any],
    faults: Faults,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Server]:
    """The folder server on 127.0.0.1 in its own thread, named by the DATAROOM_ variables."""
    monkeypatch.setenv("DATAGO_MAX_RETRIES", "3")
    with Server(make_app(tmp_path / "data", token=TOKEN), fault=faults) as running:
        monkeypatch.setenv("DATAROOM_API_URL", running.url + "api/")
        monkeypatch.setenv("DATAROOM_API_KEY", TOKEN)
        yield running


def client_of(config: dict[str, Any], timeout_s: float = TIMEOUT_S) -> DatagoClient:
    """A client of `config` whose page and file GETs time out after `timeout_s`."""
    environment = Environment.from_env()  # the fixture's DATAROOM_API_URL and _KEY
    timeouts = replace(environment, page_timeout_s=timeout_s, file_timeout_s=timeout_s)
    return DatagoClient(config, environment=timeouts)


def db_config(**source: Any) -> dict[str, Any]:
    keys = {"sources": "alpha,beta", "page_size": 10, "require_images": True, **source}
    return {"source_type": "db", "source_config": keys, "samples_buffer_size": 16}


def read_all(client: DatagoClient, into: list[str] | None = None) -> list[str]:
    ids = [] if into is None else into
    for sample in client:
        ids.append(sample.id)
    return ids


def cursor_of(catalogue: dict[str, Any], after: int) -> Callable[[Logged], bool]:
    """Matches the request for the page that starts after the first `after` ids."""
    last = sorted(catalogue)[after - 1]
    return lambda request: request.query.get("cursor") == last


def is_page(key: str) -> bool:
    return key.startswith("/api/")


def test_transient_faults_on_pages_and_media_lose_and_repeat_nothing(
    server: Server, faults: Faults, catalogue: dict[str, dict[str, Any]]
) -> None:
    faults.rate, faults.seed = 0.1, 7
    start = time.monotonic()
    with client_of(db_config()) as client:
        samples = list(client)
        stats = client.stats
    assert time.monotonic() - start < 15
    assert [s.id for s in samples] == sorted(catalogue)
    for sample in samples:
        meta = catalogue[sample.id]
        assert sample.image.to_numpy().shape == (meta["height"], meta["width"], 3)
    assert (stats.samples, stats.skipped, stats.source_errors) == (len(catalogue), 0, 0)
    kinds = {kind for _, kind in faults.injected}
    assert kinds == set(KINDS), faults.injected
    assert any(is_page(key) for key, _ in faults.injected)
    assert sum(not is_page(key) for key, _ in faults.injected) >= 10
    for key, _ in faults.injected:  # every broken request was asked again
        assert faults.attempts[key] >= 2


def test_transient_faults_on_masks_and_latents(
    server: Server, faults: Faults, catalogue: dict[str, dict[str, Any]]
) -> None:
    faults.rate, faults.seed = 0.1, 3
    config = db_config(has_masks="mask", has_latents="latent_vae")
    with client_of(config) as client:
        samples = list(client)
        stats = client.stats
    with_files = sorted(key for key, meta in catalogue.items() if "latent" in meta)
    assert [s.id for s in samples] == with_files
    for sample in samples:
        meta = catalogue[sample.id]
        assert sample.masks["mask"].to_numpy().shape[:2] == (meta["height"], meta["width"])
        assert sample.latents["latent_vae"].data == meta["latent"]
    assert (stats.skipped, stats.source_errors) == (0, 0)
    assert any("mask" in key for key, _ in faults.injected)
    assert any("latent" in key for key, _ in faults.injected)


@pytest.mark.parametrize(("status", "attempts"), [(404, 1), (503, 3)])
def test_an_image_lost_for_good_is_skipped_once_and_the_rest_delivered(
    server: Server,
    faults: Faults,
    catalogue: dict[str, dict[str, Any]],
    status: int,
    attempts: int,
) -> None:
    missing = sorted(catalogue)[42]
    faults.rate, faults.seed = 0.1, 11
    faults.always[lambda request: request.path == f"/media/{missing}"] = status
    with client_of(db_config()) as client:
        ids = read_all(client)
        stats = client.stats
    assert ids == [key for key in sorted(catalogue) if key != missing]
    assert (stats.samples, stats.skipped, stats.source_errors) == (len(catalogue) - 1, 1, 0)
    assert stats.skip_reasons == {"download failed": 1}
    assert faults.attempts[f"/media/{missing}"] == attempts  # a 404 is not retried


def test_a_page_failing_for_good_raises_after_the_samples_before_it(
    server: Server, faults: Faults, catalogue: dict[str, dict[str, Any]]
) -> None:
    faults.rate, faults.seed = 0.1, 5
    faults.always[cursor_of(catalogue, 30)] = 500
    ids: list[str] = []
    start = time.monotonic()
    with (
        client_of(db_config()) as client,
        pytest.raises(
            SourceError,
            match=r"page 4 failed after 3 attempt\(s\): GET .*HTTP 500: injected for good$",
        ),
    ):
        read_all(client, into=ids)
    assert time.monotonic() - start < 10
    assert ids == sorted(catalogue)[:30]
    stats = client.stats
    assert (stats.samples, stats.skipped, stats.source_errors) == (30, 0, 1)
    last = sorted(catalogue)[29]
    assert [query.get("cursor") for query in faults.queries].count(last) == 3


@pytest.mark.parametrize("retries", [1, 2, 5])
def test_a_page_is_asked_exactly_max_retries_times(
    server: Server,
    faults: Faults,
    catalogue: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    retries: int,
) -> None:
    monkeypatch.setenv("DATAGO_MAX_RETRIES", str(retries))
    faults.always[lambda request: request.path.startswith("/api/")] = 503
    with client_of(db_config()) as client, pytest.raises(SourceError, match="HTTP 503"):
        read_all(client)
    assert sum(faults.attempts.values()) == retries


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def settled_fd_count(baseline: int, within_s: float = 1.0) -> int:
    """The fd count once it is back to `baseline`, or as it stands after `within_s`."""
    deadline = time.monotonic() + within_s
    while (count := fd_count()) > baseline and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


def eventually(condition: Callable[[], bool], within_s: float = 5.0) -> bool:
    """Whether `condition` comes true within `within_s`, polled."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize(
    "stall", ["media_in_flight", "by_host_name", "pages_stalled", "media_bodies_stalled"]
)
def test_closing_mid_stream_is_quick_and_leaves_no_thread_or_socket(
    server: Server,
    faults: Faults,
    catalogue: dict[str, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    stall: str,
) -> None:
    if stall == "by_host_name":  # resolved by aiohttp in a thread of the loop
        api_url = server.url.replace("127.0.0.1", "localhost") + "api/"
        monkeypatch.setenv("DATAROOM_API_URL", api_url)
    if stall in ("media_in_flight", "by_host_name"):
        faults.media_delay_s = 0.05
    elif stall == "pages_stalled":  # no answer at all
        faults.only = lambda key: "stall_headers" if key.startswith("/api/") else None
    else:  # headers and half of the body, then nothing
        faults.only = lambda key: "stall_body" if key.startswith("/media/") else None
    threads = set(threading.enumerate())
    baseline = fd_count()
    client = client_of(db_config(), timeout_s=30.0)  # stalls end by closing, not by timeouts
    try:
        if stall in ("media_in_flight", "by_host_name"):
            first = [client.get_sample(timeout=5) for _ in range(5)]
            assert [s.id for s in first if s is not None] == sorted(catalogue)[:5]
            assert eventually(lambda: fd_count() > baseline)  # connections are open
        else:
            with pytest.raises(TimeoutError):
                client.get_sample(timeout=0.5)
            # Polled: on a busy machine the stalled request and its socket may come later.
            assert eventually(lambda: bool(faults.injected) and fd_count() > baseline)
    finally:
        start = time.monotonic()
        client.close()
        closed_in = time.monotonic() - start
    assert closed_in < 1.0
    assert settled_fd_count(baseline) <= baseline
    assert {t for t in threading.enumerate() if not t.name.startswith("loopback-server")} <= threads


def _with_next(next_url: Callable[[Logged], str]) -> Callable[[Logged, bytes], bytes]:
    def change(request: Logged, body: bytes) -> bytes:
        page = json.loads(body)
        page["next"] = next_url(request)
        return json.dumps(page).encode()

    return change


@pytest.mark.parametrize(
    ("body", "delivered", "message"),
    [
        (lambda *_: b"<html>Bad gateway</html>", 10, r"page 2 \(http://.*\): the body is not JSON"),
        (lambda *_: b"\xff\xfe{}", 10, "page 2 .*the body is not JSON"),
        (lambda *_: b"[" * 100_000, 10, "page 2 .*the body is not JSON"),
        (lambda *_: b"[1, 2]", 10, r"page 2 .*the body is not \{'results'"),
        (lambda *_: b'{"results": {}, "next": null}', 10, r"page 2 .*not \{'results'"),
        (lambda *_: b'{"results": [], "next": 5}', 10, r"page 2 .*not \{'results'"),
        (
            _with_next(lambda request: str(request.url)),
            20,
            r"page 2 links back to an earlier page: http://",
        ),
        (
            _with_next(lambda request: str(request.url.without_query_params("cursor"))),
            20,
            r"page 2 links back to an earlier page: http://",
        ),
        (
            _with_next(lambda _: f"http://127.0.0.1:{free_port()}/api/images/?cursor=x"),
            20,
            r"page 3 failed: GET http://127.0.0.1:\d+/api/images/\?cursor=x failed after 3 "
            r"attempt\(s\): ClientConnectorError: Cannot connect",
        ),
        (
            _with_next(lambda _: "/api/images/?cursor=x"),
            20,
            r"page 3 failed: GET /api/images/\?cursor=x failed after 1 attempt\(s\)",
        ),
    ],
    ids=[
        "html",
        "not-utf8",
        "too-deep",
        "list",
        "results-object",
        "next-number",
        "next-itself",
        "next-first-page",
        "next-dead-port",
        "next-relative",
    ],
)
def test_a_malformed_page_is_a_source_error_after_the_samples_before_it(
    server: Server,
    faults: Faults,
    catalogue: dict[str, dict[str, Any]],
    body: Callable[[Logged, bytes], bytes],
    delivered: int,
    message: str,
) -> None:
    faults.rewrite[cursor_of(catalogue, 10)] = body
    ids: list[str] = []
    start = time.monotonic()
    with client_of(db_config()) as client, pytest.raises(SourceError, match=message):
        read_all(client, into=ids)
    assert time.monotonic() - start < 5
    assert ids == sorted(catalogue)[:delivered]
    assert client.stats.source_errors == 1


def test_a_client_error_status_is_not_retried_and_quotes_its_detail(
    server: Server, faults: Faults, catalogue: dict[str, dict[str, Any]]
) -> None:
    faults.always[cursor_of(catalogue, 10)] = 400
    with (
        client_of(db_config()) as client,
        pytest.raises(
            SourceError,
            match=r"page 2 failed after 1 attempt\(s\): GET .*: HTTP 400: injected for good$",
        ),
    ):
        read_all(client)
    assert [query.get("cursor") for query in faults.queries].count(sorted(catalogue)[9]) == 1


def test_malformed_items_are_skipped_and_counted(
    server: Server, faults: Faults, catalogue: dict[str, dict[str, Any]]
) -> None:
    ids = sorted(catalogue)
    broken = {
        ids[1]: {"attributes": None},
        ids[2]: {"tags": "a-tag"},
        ids[3]: {"image_direct_url": 7},
        ids[4]: {"duplicate_state": "2"},
        ids[5]: {"coca_embedding": {"vector": ["x"]}},
        ids[12]: {"latents": [{"latent_type": "mask", "file_direct_url": None}]},
    }
    relative = ids[6]  # an image URL without a host: the download fails, not retried

    def corrupt(request: Logged, body: bytes) -> bytes:
        page = json.loads(body)
        for item in page["results"]:
            item.update(broken.get(item["id"], {}))
            if item["id"] == relative:
                item["image_direct_url"] = f"/media/{relative}"
        page["results"] += ["not an object", {"id": 42}]
        return json.dumps(page).encode()

    faults.rewrite[lambda request: request.path.startswith("/api/")] = corrupt
    with client_of(db_config()) as client:
        delivered = read_all(client)
        stats = client.stats
    assert delivered == [key for key in ids if key not in broken and key != relative]
    pages = len(ids) // 10 + 1  # the last page is empty
    assert stats.skip_reasons == {"malformed dataroom item": 6 + 2 * pages, "download failed": 1}
    assert stats.skipped == 7 + 2 * pages
    assert faults.attempts[f"/media/{relative}"] == 0


def test_a_limit_under_faults_gives_exactly_the_first_samples(
    server: Server, faults: Faults, catalogue: dict[str, dict[str, Any]]
) -> None:
    faults.rate, faults.seed = 0.1, 13
    with client_of({**db_config(), "limit": 37}) as client:
        ids = read_all(client)
        stats = client.stats
    assert ids == sorted(catalogue)[:37]
    assert (stats.samples, stats.skipped, stats.source_errors) == (37, 0, 0)


def test_random_sampling_under_faults_runs_to_the_limit(
    server: Server, faults: Faults, catalogue: dict[str, dict[str, Any]]
) -> None:
    faults.rate, faults.seed, faults.in_a_row = 0.1, 17, 2
    faults.attempts.clear()
    config = {**db_config(random_sampling=True, page_size=20), "limit": 60}
    with client_of(config) as client:
        ids = read_all(client)
        stats = client.stats
    assert len(ids) == 60
    assert set(ids) <= set(catalogue)
    assert (stats.skipped, stats.source_errors) == (0, 0)
    assert any(not is_page(key) for key, _ in faults.injected)


def test_a_refused_token_quotes_the_api(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATAROOM_API_KEY", "wrong")
    with (
        client_of(db_config()) as client,
        pytest.raises(
            SourceError,
            match=r"HTTP 401\) for .*: check DATAROOM_API_KEY \(the API said: Invalid token.\)$",
        ),
    ):
        read_all(client)
    assert client.stats.source_errors == 1


@pytest.mark.parametrize("seed", [1, 10])  # skips and the end; skips and the last page lost
def test_under_heavy_faults_every_sample_comes_once_or_is_counted(
    server: Server, faults: Faults, catalogue: dict[str, dict[str, Any]], seed: int
) -> None:
    faults.rate, faults.seed, faults.in_a_row = 0.25, seed, 99  # a URL may fail every time
    ids: list[str] = []
    failed_page = 0
    start = time.monotonic()
    with client_of(db_config()) as client:
        try:
            read_all(client, into=ids)
        except SourceError as exc:
            match = re.search(r"page (\d+) failed\b.* after 3 attempt\(s\): ", str(exc))
            assert match, exc
            failed_page = int(match[1])
        stats = client.stats
    assert time.monotonic() - start < 15
    wanted = sorted(catalogue)[: (failed_page - 1) * 10] if failed_page else sorted(catalogue)
    assert set(ids) <= set(wanted)
    assert ids == sorted(set(ids))  # in order, none twice
    assert len(ids) + stats.skipped == len(wanted)
    assert stats.skip_reasons == ({"download failed": stats.skipped} if stats.skipped else {})
    assert stats.source_errors == (1 if failed_page else 0)
    # aiohttp itself asks again once when a reused connection is reset: >= 3, not == 3
    lost = {key.removeprefix("/media/") for key, count in faults.attempts.items() if count >= 3}
    assert set(wanted) - set(ids) <= lost
