"""`ObjectStore` against moto's real S3 server on loopback, with a fault-injecting proxy before it.

Every request goes through `S3Proxy`, so the tests count them: ranges asked, pages listed,
signatures sent, retries made.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qs

import pytest

from datago.errors import ConfigError, SourceError
from datago.storage.object_store import ObjectStore
from tests.helpers.object_stores import (
    KEYS,
    Fault,
    MotoS3,
    S3Proxy,
    first,
    moto_s3,
    s3_error,
)

pytestmark = pytest.mark.usefixtures("no_aws_environment")

BUCKET = "data"
PUBLIC = "open-data"
BIG = os.urandom(3_000_000)
MANY = [f"many/{i:05d}.jpg" for i in range(2100)]  # three pages of up to 1000 keys
PREFIXED = ["p/a1", "p/a2", "p/b", "pa"]
ODD_KEY = "sp ace/é+%.bin"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with moto_s3() as server:
        server.create_bucket(BUCKET)
        server.put(BUCKET, "big.bin", BIG)
        server.put(BUCKET, ODD_KEY, b"odd")
        server.put_many(BUCKET, MANY)
        server.put_many(BUCKET, PREFIXED)
        server.create_bucket(PUBLIC, public=True)
        for key in PREFIXED:
            server.put(PUBLIC, key, key.encode(), public=True)
        yield server


@pytest.fixture
async def proxy(moto: MotoS3) -> AsyncIterator[S3Proxy]:
    async with S3Proxy(moto.endpoint) as server:
        yield server


@pytest.fixture(params=["signed", "obstore"])
def via(request: pytest.FixtureRequest) -> str:
    """Who sends a GET: our HTTP client, to a presigned URL, or obstore (for a store it cannot
    sign; forced here by a header only obstore's requests would carry)."""
    return str(request.param)


def make_store(
    proxy: S3Proxy, attempts: int = 3, via: str = "signed", **options: Any
) -> ObjectStore:
    settings = {"endpoint": proxy.endpoint, "region": "us-east-1", **KEYS, **options}
    if via == "obstore":
        settings["default_headers"] = {"x-test": "obstore"}
    return ObjectStore(
        attempts=attempts, options=settings, backoff_base_s=0.01, throttle_base_s=0.05
    )


async def collect(store: ObjectStore, url: str, start: int = 0) -> list[bytes]:
    return [chunk async for chunk in store.stream(url, start)]


async def test_read_returns_the_whole_object_and_odd_keys_work(proxy: S3Proxy, via: str) -> None:
    store = make_store(proxy, via=via)
    try:
        assert await store.read(f"s3://{BUCKET}/big.bin") == BIG
        assert await store.read(f"s3://{BUCKET}/{ODD_KEY}") == b"odd"
    finally:
        await store.close()
    assert [seen.status for seen in proxy.requests] == [200, 200]


async def test_a_stream_from_an_offset_is_one_ranged_read_in_bounded_chunks(
    proxy: S3Proxy, via: str
) -> None:
    store = make_store(proxy, via=via)
    store.chunk_bytes = 256 << 10
    try:
        chunks = await collect(store, f"s3://{BUCKET}/big.bin", start=1000)
    finally:
        await store.close()
    assert b"".join(chunks) == BIG[1000:]
    # streamed, not buffered whole: chunks of the asked size plus at most a network read
    assert len(chunks) >= 4
    assert max(len(chunk) for chunk in chunks) <= 3 * (256 << 10)
    assert [(seen.method, seen.range_start) for seen in proxy.requests] == [("GET", 1000)]


async def test_a_stream_at_the_end_is_empty_and_past_it_an_error(proxy: S3Proxy, via: str) -> None:
    store = make_store(proxy, via=via)
    try:
        assert await collect(store, f"s3://{BUCKET}/big.bin", start=len(BIG)) == []
        with pytest.raises(SourceError, match="past the end"):
            await collect(store, f"s3://{BUCKET}/big.bin", start=len(BIG) + 1)
    finally:
        await store.close()


async def test_listing_streams_pages_in_key_order(proxy: S3Proxy) -> None:
    store = make_store(proxy)
    urls: list[str] = []
    pages_when_first_arrived = 0
    try:
        async for url in store.list(f"s3://{BUCKET}/many/"):
            if not urls:
                pages_when_first_arrived = len(proxy.of("GET"))
            urls.append(url)
    finally:
        await store.close()
    assert urls == [f"s3://{BUCKET}/{key}" for key in MANY]
    assert pages_when_first_arrived == 1  # the first key came before page two was asked
    assert len(proxy.of("GET")) == 3


async def test_a_failed_page_is_asked_again_after_the_last_key_seen(proxy: S3Proxy) -> None:
    page_two = first(1, s3_error(503, "SlowDown"))
    proxy.fault = lambda seen: page_two(seen) if "continuation-token" in seen.path_qs else None
    store = make_store(proxy)
    try:
        urls = [url async for url in store.list(f"s3://{BUCKET}/many/")]
    finally:
        await store.close()
    assert urls == [f"s3://{BUCKET}/{key}" for key in MANY]  # each key once
    assert [seen.status for seen in proxy.requests] == [200, 503, 200, 200]
    assert f"start-after={MANY[999].replace('/', '%2F')}" in proxy.requests[2].path_qs


async def test_a_plain_prefix_lists_only_the_keys_that_start_with_it(proxy: S3Proxy) -> None:
    store = make_store(proxy)
    try:
        assert [url async for url in store.list(f"s3://{BUCKET}/p/a")] == [
            f"s3://{BUCKET}/p/a1",
            f"s3://{BUCKET}/p/a2",
        ]
        assert [url async for url in store.list(f"s3://{BUCKET}/p")] == [
            f"s3://{BUCKET}/{key}" for key in PREFIXED
        ]
        only = [url async for url in store.list(f"s3://{BUCKET}/big.bin")]
        assert only == [f"s3://{BUCKET}/big.bin"]
        assert [url async for url in store.list(f"s3://{BUCKET}/sp ace/")] == [
            f"s3://{BUCKET}/{ODD_KEY}"
        ]
    finally:
        await store.close()


async def test_a_reset_mid_object_resumes_at_the_last_byte_delivered(
    proxy: S3Proxy, via: str
) -> None:
    proxy.fault = first(1, Fault(cut_after=1_500_000))
    store = make_store(proxy, via=via)
    store.chunk_bytes = 64 << 10
    delivered_before_cut = 0
    chunks: list[bytes] = []
    try:
        async for chunk in store.stream(f"s3://{BUCKET}/big.bin"):
            if len(proxy.requests) == 1:
                delivered_before_cut += len(chunk)
            chunks.append(chunk)
    finally:
        await store.close()
    assert b"".join(chunks) == BIG
    first_get, resumed = proxy.requests
    assert first_get.fault == "cut at 1500000"
    assert 0 < resumed.range_start == delivered_before_cut <= 1_500_000
    # pinned to the version first read
    assert resumed.headers["If-Range" if via == "signed" else "If-Match"]


async def test_an_object_changed_before_the_resume_is_an_error(
    proxy: S3Proxy, moto: MotoS3, via: str
) -> None:
    key = f"changing-{via}.bin"  # moto refuses to overwrite an object unsigned
    moto.put(BUCKET, key, BIG)
    rewrite = Fault(before=lambda: moto.put_many(BUCKET, [key], BIG[::-1]))
    changes = [Fault(cut_after=1_000_000), rewrite]
    proxy.fault = lambda seen: changes.pop(0) if changes else None
    store = make_store(proxy, via=via)
    try:
        with pytest.raises(SourceError, match="changed") as caught:
            await collect(store, f"s3://{BUCKET}/{key}")
    finally:
        await store.close()
    assert f"s3://{BUCKET}/{key}" in str(caught.value)
    assert len(proxy.requests) == 2  # a precondition failure is not retried


async def test_a_throttling_burst_is_retried_with_growing_backoff(proxy: S3Proxy, via: str) -> None:
    proxy.fault = first(2, s3_error(503, "SlowDown"))
    store = make_store(proxy, attempts=3, via=via)
    started = time.monotonic()
    try:
        assert await store.read(f"s3://{BUCKET}/big.bin") == BIG
    finally:
        await store.close()
    assert [seen.status for seen in proxy.requests] == [503, 503, 200]
    # throttle backoff: 0.05 s then 0.1 s, each jittered down to half at most
    assert time.monotonic() - started >= 0.075


@pytest.mark.parametrize("status", [503, 429])
async def test_a_throttled_get_waits_what_retry_after_asks(proxy: S3Proxy, status: int) -> None:
    proxy.fault = first(1, s3_error(status, "SlowDown", **{"Retry-After": "1"}))
    store = make_store(proxy)  # throttle backoff alone: 0.05 s
    try:
        assert b"".join(await collect(store, f"s3://{BUCKET}/big.bin")) == BIG
    finally:
        await store.close()
    throttled, answered = proxy.requests
    assert (throttled.status, answered.status) == (status, 200)
    assert 0.95 <= answered.started - throttled.started < 1.5


async def test_a_retry_after_beyond_the_cap_fails_at_once_and_says_so(proxy: S3Proxy) -> None:
    proxy.fault = first(9, s3_error(503, "SlowDown", **{"Retry-After": "600"}))
    store = make_store(proxy, attempts=5)
    try:
        with pytest.raises(SourceError) as caught:
            await store.read(f"s3://{BUCKET}/big.bin")
    finally:
        await store.close()
    assert str(caught.value) == (
        f"GET s3://{BUCKET}/big.bin: HTTP 503 (SlowDown): the store asked to retry after "
        "600 s, more than the 60 s datago waits"
    )
    assert len(proxy.requests) == 1


async def test_throttling_that_lasts_fails_after_the_attempts_with_the_status(
    proxy: S3Proxy, via: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.fault = first(99, s3_error(503, "SlowDown"))
    store = make_store(proxy, attempts=3, via=via)
    caplog.set_level(logging.DEBUG, logger="datago")
    try:
        with pytest.raises(SourceError) as caught:
            await collect(store, f"s3://{BUCKET}/big.bin")
    finally:
        await store.close()
    message = str(caught.value)
    assert f"s3://{BUCKET}/big.bin" in message
    assert "HTTP 503 (SlowDown) after 3 attempt(s)" in message
    assert len(proxy.requests) == 3
    # the retries are logged by the object's URL, never by a signed one
    logged = [record.getMessage() for record in caplog.records]
    assert via == "obstore" or len([line for line in logged if "s3://" in line]) == 2
    assert not [line for line in [message, *logged] if "Signature" in line or "Credential" in line]


async def test_denied_access_is_not_retried(proxy: S3Proxy, via: str) -> None:
    proxy.fault = first(99, s3_error(403, "AccessDenied"))
    store = make_store(proxy, attempts=5, via=via)
    try:
        with pytest.raises(SourceError) as caught:
            await store.read(f"s3://{BUCKET}/big.bin")
        with pytest.raises(SourceError, match="HTTP 403"):
            [url async for url in store.list(f"s3://{BUCKET}/many/")]
    finally:
        await store.close()
    assert str(caught.value) == (
        f"GET s3://{BUCKET}/big.bin: HTTP 403 (AccessDenied): access denied; "
        "check the credentials and permissions"
    )
    assert len(proxy.requests) == 2  # one read, one listing page


async def test_a_missing_key_or_bucket_fails_at_once_and_says_which(
    proxy: S3Proxy, via: str
) -> None:
    store = make_store(proxy, attempts=5, via=via)
    try:
        with pytest.raises(SourceError) as key:
            await store.read(f"s3://{BUCKET}/nope.tar")
        with pytest.raises(SourceError) as bucket:
            await collect(store, "s3://no-such-bucket/shard.tar")
        with pytest.raises(SourceError) as listing:
            [url async for url in store.list("s3://no-such-bucket/shards/")]
    finally:
        await store.close()
    assert (
        str(key.value)
        == f"GET s3://{BUCKET}/nope.tar: HTTP 404 (NoSuchKey): the object does not exist"
    )
    assert (
        "s3://no-such-bucket/shard.tar: HTTP 404 (NoSuchBucket): the bucket does not exist"
        in str(bucket.value)
    )
    assert str(listing.value).startswith("LIST s3://no-such-bucket/shards/: HTTP 404")
    assert len(proxy.requests) == 3


async def test_no_credentials_names_the_variables_without_a_retry_storm(
    proxy: S3Proxy, moto: MotoS3
) -> None:
    # The instance-metadata fallback asks a loopback server that has no credentials to give.
    async with S3Proxy(moto.endpoint, fault=lambda seen: s3_error(404, "NotFound")) as metadata:
        store = ObjectStore(
            attempts=5,
            options={"endpoint": proxy.endpoint, "metadata_endpoint": metadata.endpoint},
            env={},
        )
        try:
            with pytest.raises(SourceError) as caught:
                await store.read(f"s3://{BUCKET}/big.bin")
        finally:
            await store.close()
    message = str(caught.value)
    assert message.startswith(f"GET s3://{BUCKET}/big.bin: no credentials: AWS_ACCESS_KEY_ID")
    assert "anonymous=true" in message
    assert proxy.requests == []  # nothing reached the bucket unsigned
    assert 1 <= len(metadata.requests) <= 2  # one token request (and a v1 fallback at most)


async def test_storage_options_sign_with_their_keys(proxy: S3Proxy) -> None:
    store = make_store(proxy, access_key_id="OPTIONS-KEY", session_token="SESSION/TOKEN+1")
    try:
        assert await store.read(f"s3://{BUCKET}/{ODD_KEY}") == b"odd"
    finally:
        await store.close()
    [seen] = proxy.requests
    assert str(seen.credential).startswith("OPTIONS-KEY/")
    assert parse_qs(seen.path_qs.partition("?")[2])["X-Amz-Security-Token"] == ["SESSION/TOKEN+1"]


async def test_anonymous_requests_are_not_signed(proxy: S3Proxy) -> None:
    store = ObjectStore(attempts=1, options={"endpoint": proxy.endpoint, "anonymous": True}, env={})
    try:
        assert await store.read(f"s3://{PUBLIC}/p/a1") == b"p/a1"
        assert [url async for url in store.list(f"s3://{PUBLIC}/p/")] == [
            f"s3://{PUBLIC}/p/a1",
            f"s3://{PUBLIC}/p/a2",
            f"s3://{PUBLIC}/p/b",
        ]
        with pytest.raises(SourceError, match="HTTP 403"):  # the private bucket stays closed
            await store.read(f"s3://{BUCKET}/{ODD_KEY}")
    finally:
        await store.close()
    assert [seen.credential for seen in proxy.requests] == [None] * 3


async def test_the_environment_gives_credentials_and_a_plain_http_endpoint(
    proxy: S3Proxy,
) -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "ENV-KEY",
        "AWS_SECRET_ACCESS_KEY": "env-secret",
        "AWS_REGION": "eu-west-3",
        "AWS_ENDPOINT_URL": proxy.endpoint,
    }
    store = ObjectStore(attempts=1, env=env)
    try:
        assert await store.read(f"s3://{BUCKET}/{ODD_KEY}") == b"odd"
    finally:
        await store.close()
    credential = str(proxy.requests[0].credential)
    assert credential.startswith("ENV-KEY/") and "/eu-west-3/s3/" in credential


async def test_options_win_over_the_environment(proxy: S3Proxy) -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "ENV-KEY",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    }
    store = ObjectStore(
        attempts=1, env=env, options={"endpoint_url": proxy.endpoint, "access_key_id": "OPT-KEY"}
    )
    try:
        assert await store.read(f"s3://{BUCKET}/{ODD_KEY}") == b"odd"
    finally:
        await store.close()
    assert str(proxy.requests[0].credential).startswith("OPT-KEY/")


async def test_an_unknown_storage_option_is_a_config_error() -> None:
    store = ObjectStore(attempts=1, options={"acess_key_id": "typo"})
    with pytest.raises(ConfigError, match="acess_key_id"):
        await store.read("s3://bucket/key")
    await store.close()


def test_attempts_below_one_are_refused() -> None:
    with pytest.raises(ConfigError, match="attempts"):
        ObjectStore(attempts=0)


@pytest.mark.slow
def test_exiting_right_after_an_abandoned_stream_does_not_abort(moto: MotoS3) -> None:
    """obstore's threads may re-enter Python as the interpreter exits (SIGABRT on CPython
    < 3.14); `close()` gives them the moment they need. Each run is a fresh interpreter."""
    script = textwrap.dedent(
        f"""
        import asyncio
        from datago.storage.object_store import ObjectStore

        async def main():
            store = ObjectStore(attempts=1, options={{"endpoint": "{moto.endpoint}", **{KEYS!r}}})
            async for chunk in store.stream("s3://{BUCKET}/big.bin"):
                break
            async for url in store.list("s3://{BUCKET}/many/"):
                break
            await store.close()

        asyncio.run(main())
        """
    )
    codes = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60).returncode
        for _ in range(8)
    ]
    assert codes == [0] * 8
