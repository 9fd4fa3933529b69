"""`gs://` against moto's S3 server standing in for GCS's XML API, and a loopback 404 server.

No GCS emulator that obstore can talk to installs here (`gcp-storage-emulator` from PyPI
answers GETs without `Last-Modified` and has no XML listing; `fake-gcs-server` is a Go
binary). GCS's XML API speaks S3's dialect, so moto answers the GETs and listings; what is
GCS's own is checked on the wire: V4 URLs signed with a service account's RSA key, and a
self-signed JWT for the listing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from datago.errors import ConfigError, SourceError
from datago.storage.object_store import ObjectStore
from tests.helpers.object_stores import MotoS3, S3Proxy, first, moto_s3, s3_error

ACCOUNT = "loader@project.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoS3]:
    with moto_s3() as server:
        server.create_bucket("bkt")
        server.put("bkt", "dir/a b.tar", b"0123456789")
        yield server


def service_account_key() -> str:
    """A service account's JSON key with a fresh RSA key (GCS checks none of it here)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return json.dumps(
        {
            "type": "service_account",
            "client_email": ACCOUNT,
            "private_key": pem.decode(),
            "private_key_id": "test-key",
            "project_id": "project",
        }
    )


@pytest.fixture(autouse=True)
def no_metadata_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep obstore's GCE metadata lookups on loopback (a closed port) if one ever happens."""
    for variable in ("GCE_METADATA_HOST", "GCE_METADATA_ROOT", "GCE_METADATA_IP"):
        monkeypatch.setenv(variable, "127.0.0.1:9")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)


async def test_anonymous_gs_reads_are_unsigned_gets_of_bucket_and_key() -> None:
    async with S3Proxy("http://127.0.0.1:9", fault=lambda seen: s3_error(404, "NoSuchKey")) as gcs:
        store = ObjectStore(attempts=3, options={"anonymous": True, "base_url": gcs.endpoint})
        try:
            with pytest.raises(SourceError) as caught:
                await store.read("https://storage.googleapis.com/bkt/dir/a%20b.tar")
        finally:
            await store.close()
    assert str(caught.value) == (
        "GET https://storage.googleapis.com/bkt/dir/a%20b.tar: HTTP 404 (NoSuchKey): "
        "the object does not exist"
    )
    [seen] = gcs.requests  # a 404 is not retried
    assert (seen.method, unquote(seen.path_qs)) == ("GET", "/bkt/dir/a b.tar")
    assert "Authorization" not in seen.headers


async def test_a_service_accounts_reads_are_signed_urls_that_honour_retry_after(
    moto: MotoS3,
) -> None:
    throttled = s3_error(429, "SlowDown", **{"Retry-After": "1"})
    async with S3Proxy(moto.endpoint, fault=first(1, throttled)) as gcs:
        options = {"service_account_key": service_account_key(), "base_url": gcs.endpoint}
        store = ObjectStore(attempts=2, options=options, backoff_base_s=0.001)
        try:
            assert await store.read("gs://bkt/dir/a b.tar") == b"0123456789"
            assert b"".join([c async for c in store.stream("gs://bkt/dir/a b.tar", 4)]) == b"456789"
            assert [url async for url in store.list("gs://bkt/dir/")] == ["gs://bkt/dir/a b.tar"]
        finally:
            await store.close()
    throttled_get, get, ranged, listing = gcs.requests
    assert [seen.status for seen in gcs.requests] == [429, 200, 206, 200]
    assert 0.95 <= get.started - throttled_get.started < 1.5
    for seen in (throttled_get, get, ranged):
        assert unquote(seen.path) == "/bkt/dir/a b.tar"
        assert (
            str(seen.credential).startswith(f"{ACCOUNT}/") and "X-Goog-Signature=" in seen.path_qs
        )
        assert "Authorization" not in seen.headers
    assert ranged.range_start == 4
    assert listing.headers["Authorization"].startswith("Bearer ")  # a self-signed JWT


@pytest.mark.parametrize("credentials", ["file", "bearer"])
async def test_only_a_service_account_key_signs_urls(
    moto: MotoS3, tmp_path: Path, credentials: str
) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(service_account_key())
    options = {
        "file": {"application_credentials": str(key_file)},
        "bearer": {"bearer_token": "TOKEN"},  # signing would need signBlob: obstore reads
    }[credentials]
    async with S3Proxy(moto.endpoint) as gcs:
        store = ObjectStore(attempts=1, options=options | {"base_url": gcs.endpoint})
        try:
            assert await store.read("gs://bkt/dir/a b.tar") == b"0123456789"
        finally:
            await store.close()
    [seen] = gcs.requests
    if credentials == "file":
        assert str(seen.credential).startswith(f"{ACCOUNT}/")
    else:
        assert seen.credential is None and seen.headers["Authorization"] == "Bearer TOKEN"


async def test_an_https_url_is_read_unsigned_when_no_credentials_are_configured() -> None:
    async with S3Proxy("http://127.0.0.1:9", fault=lambda seen: s3_error(404, "NoSuchKey")) as gcs:
        store = ObjectStore(attempts=3, options={"base_url": gcs.endpoint})  # no `anonymous`
        try:
            with pytest.raises(SourceError, match="HTTP 404"):
                await store.read("https://storage.googleapis.com/bkt/k.tar")
        finally:
            await store.close()
    [seen] = gcs.requests
    assert unquote(seen.path_qs) == "/bkt/k.tar" and "Authorization" not in seen.headers


async def test_a_missing_credentials_file_is_named() -> None:
    store = ObjectStore(attempts=1, env={"GOOGLE_APPLICATION_CREDENTIALS": "/no/such/key.json"})
    try:
        with pytest.raises(SourceError, match=r"gs://bkt/k: .*/no/such/key\.json"):
            await store.read("gs://bkt/k")
    finally:
        await store.close()


async def test_a_key_gcs_does_not_know_is_a_config_error() -> None:
    store = ObjectStore(attempts=1, options={"region": "us-east-1"})
    try:
        with pytest.raises(ConfigError, match="'region' is not valid for store 'GCS'"):
            await store.read("gs://bkt/k")
    finally:
        await store.close()
