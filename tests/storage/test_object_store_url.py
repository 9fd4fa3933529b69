"""`parse_url`: every scheme and https form names the right store, bucket, key and region."""

from __future__ import annotations

import pytest

from datago.errors import SourceError
from datago.storage.object_store_url import gcs_listing_prefix, is_object_store_url, parse_url

CASES = [
    # url, kind, bucket, key, account, region
    ("s3://train/shards/000.tar", "s3", "train", "shards/000.tar", "", ""),
    ("s3a://train/", "s3", "train", "", "", ""),
    ("s3://train", "s3", "train", "", "", ""),
    ("gs://bkt/a b/c.jpg", "gcs", "bkt", "a b/c.jpg", "", ""),
    ("az://cont/x/y.tar", "azure", "cont", "x/y.tar", "", ""),
    ("azure://cont/x", "azure", "cont", "x", "", ""),
    ("abfs://cont/x", "azure", "cont", "x", "", ""),
    ("abfss://cont@acct.dfs.core.windows.net/x/y", "azure", "cont", "x/y", "acct", ""),
    ("https://storage.googleapis.com/bkt/a%20b/c.tar", "gcs", "bkt", "a b/c.tar", "", ""),
    ("https://bkt.storage.googleapis.com/a/c.tar", "gcs", "bkt", "a/c.tar", "", ""),
    ("https://acct.blob.core.windows.net/cont/k%2Bx.tar", "azure", "cont", "k+x.tar", "acct", ""),
    ("https://acct.dfs.core.windows.net/cont/k", "azure", "cont", "k", "acct", ""),
    ("https://my.bkt.s3.us-west-2.amazonaws.com/k/x", "s3", "my.bkt", "k/x", "", "us-west-2"),
    ("https://bkt.s3.amazonaws.com/k", "s3", "bkt", "k", "", ""),
    ("https://bkt.s3-eu-west-1.amazonaws.com/k", "s3", "bkt", "k", "", "eu-west-1"),
    ("https://s3.eu-west-1.amazonaws.com/bkt/k", "s3", "bkt", "k", "", "eu-west-1"),
    ("https://s3.amazonaws.com/bkt/k", "s3", "bkt", "k", "", ""),
]


@pytest.mark.parametrize(("url", "kind", "bucket", "key", "account", "region"), CASES)
def test_each_form_names_its_store_bucket_and_key(
    url: str, kind: str, bucket: str, key: str, account: str, region: str
) -> None:
    location = parse_url(url)
    assert (location.kind, location.bucket, location.key) == (kind, bucket, key)
    assert (location.account, location.region) == (account, region)
    assert is_object_store_url(url)
    if key:  # a listed key comes back in the form the URL came in
        assert location.url_of(key) == url


def test_sibling_keys_keep_the_form_and_encoding_of_the_url() -> None:
    assert parse_url("s3://b/dir/").url_of("dir/a b.tar") == "s3://b/dir/a b.tar"
    https = parse_url("https://storage.googleapis.com/b/dir/")
    assert https.url_of("dir/a b+c.tar") == "https://storage.googleapis.com/b/dir/a%20b%2Bc.tar"


@pytest.mark.parametrize(
    "url",
    [
        "foo://bucket/key",
        "/data/shards/000.tar",
        "http://example.com/shards/000.tar",
        "https://s3.amazonaws.com/",
        "s3:///key",
        "abfss://cont@example.com/x",
    ],
)
def test_urls_of_no_known_store_are_source_errors(url: str) -> None:
    assert not is_object_store_url(url)
    with pytest.raises(SourceError) as caught:
        parse_url(url)
    assert url in str(caught.value)


def test_upstreams_gcs_json_listing_url_names_the_prefix_it_lists() -> None:
    listing = "https://storage.googleapis.com/storage/v1/b/webdataset/o?prefix=testdata/pub%20lay"
    assert (
        gcs_listing_prefix(listing)
        == "https://storage.googleapis.com/webdataset/testdata/pub%20lay"
    )
    whole = "https://storage.googleapis.com/storage/v1/b/bkt/o"
    assert gcs_listing_prefix(whole) == "https://storage.googleapis.com/bkt/"
    assert gcs_listing_prefix("https://storage.googleapis.com/bkt/a.tar") is None
    assert gcs_listing_prefix("https://example.com/storage/v1/b/bkt/o") is None
