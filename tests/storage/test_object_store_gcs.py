"""`gs://` configuration: no GCS emulator that obstore can talk to installs here.

(`gcp-storage-emulator` from PyPI answers GETs without `Last-Modified` and has no XML listing,
both of which obstore's GCS client needs; `fake-gcs-server` is a Go binary.) So these tests
check what reaches the wire and the errors, against a loopback server that answers 404.
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from datago.errors import ConfigError, SourceError
from datago.storage.object_store import ObjectStore
from tests.helpers.object_stores import S3Proxy, s3_error


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
