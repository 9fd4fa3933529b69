"""Object-store URLs: which store, bucket and key a URL names (pure, no I/O).

Schemes: `s3://` (`s3a://`), `gs://`, `az://`/`azure://`/`abfs[s]://` (`container/key`, or
`container@account.dfs.core.windows.net/key`), and the https forms of each store:
`https://storage.googleapis.com/bucket/key`, `https://bucket.storage.googleapis.com/key`,
`https://account.blob.core.windows.net/container/key` (or `.dfs.`), and S3's virtual-hosted
`https://bucket.s3[.region].amazonaws.com/key` and path-style
`https://s3[.region].amazonaws.com/bucket/key`. Keys in https URLs are percent-encoded.
Upstream's GCS JSON listing URL maps to the prefix it lists (`gcs_listing_prefix`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, quote, unquote, urlsplit

from datago.errors import SourceError

Kind = Literal["s3", "gcs", "azure"]
OBJECT_SCHEMES: dict[str, Kind] = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "az": "azure",
    "azure": "azure",
    "abfs": "azure",
    "abfss": "azure",
}
_AWS_HOST = re.compile(
    r"(?:(?P<bucket>.+)\.)?s3(?:[.-](?P<region>[a-z]{2}(?:-[a-z]+)+-\d+))?\.amazonaws\.com"
)
_AZURE_HOST = re.compile(r"(?P<account>[a-z0-9]+)\.(?:blob|dfs)\.core\.windows\.net")
_GCS_HOSTS = ("storage.googleapis.com", "storage.cloud.google.com")
_GCS_LISTING = re.compile(r"/storage/v1/b/(?P<bucket>[^/]+)/o/?")


@dataclass(frozen=True, slots=True)
class ObjectLocation:
    """Where an object (or a prefix) lives: `root` + key is the URL, in the form it came in."""

    url: str
    kind: Kind
    bucket: str  # the S3/GCS bucket or the Azure container
    key: str  # "" for the whole bucket
    root: str  # the URL up to the key, ending in "/"
    account: str = ""  # the Azure storage account, when the URL names it
    region: str = ""  # the S3 region, when the URL names it
    quoted: bool = False  # https URLs carry percent-encoded keys

    def url_of(self, key: str) -> str:
        """The URL of another key in the same bucket, in this location's form."""
        return self.root + (quote(key) if self.quoted else key)


def parse_url(url: str) -> ObjectLocation:
    """The store, bucket and key an object-store URL names; `SourceError` if it names none."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    kind = OBJECT_SCHEMES.get(scheme)
    if kind is not None:
        netloc = parts.netloc
        bucket, account = netloc, ""
        if kind == "azure" and "@" in netloc:
            bucket, _, account_host = netloc.partition("@")
            match = _AZURE_HOST.fullmatch(account_host.lower())
            if match is None:
                raise SourceError(f"{url}: expected container@account.dfs.core.windows.net")
            account = match["account"]
        key = parts.path.removeprefix("/")
        return _location(url, kind, bucket, key, f"{scheme}://{netloc}/", account=account)
    if scheme in ("https", "http"):
        located = _https_location(url, host, unquote(parts.path).removeprefix("/"))
        if located is not None:
            return located
    raise SourceError(
        f"{url}: not an object-store URL; expected s3://bucket/key, gs://bucket/key, "
        "az://container/key or an https URL of S3, GCS or Azure Blob storage"
    )


def gcs_listing_prefix(url: str) -> str | None:
    """The prefix URL a GCS JSON listing URL names, as upstream reads one
    (`https://storage.googleapis.com/storage/v1/b/BUCKET/o?prefix=P` ->
    `https://storage.googleapis.com/BUCKET/P`); None for any other URL."""
    parts = urlsplit(url)
    match = _GCS_LISTING.fullmatch(parts.path)
    if parts.hostname not in _GCS_HOSTS or match is None:
        return None
    prefix = parse_qs(parts.query).get("prefix", [""])[0]
    return f"https://{parts.netloc}/{match['bucket']}/{quote(prefix)}"


def is_object_store_url(url: str) -> bool:
    """Whether `parse_url` recognises the URL (an https URL of a known store counts)."""
    try:
        parse_url(url)
    except SourceError:
        return False
    return True


def _https_location(url: str, host: str, path: str) -> ObjectLocation | None:
    origin = url[: url.index("//") + 2] + urlsplit(url).netloc + "/"
    if host in _GCS_HOSTS:
        bucket, _, key = path.partition("/")
        return _location(url, "gcs", bucket, key, f"{origin}{bucket}/", quoted=True)
    if host.endswith(".storage.googleapis.com"):
        bucket = host.removesuffix(".storage.googleapis.com")
        return _location(url, "gcs", bucket, path, origin, quoted=True)
    if match := _AZURE_HOST.fullmatch(host):
        container, _, key = path.partition("/")
        root = f"{origin}{container}/"
        return _location(url, "azure", container, key, root, account=match["account"], quoted=True)
    if match := _AWS_HOST.fullmatch(host):
        region = match["region"] or ""
        if match["bucket"]:  # virtual-hosted style
            return _location(url, "s3", match["bucket"], path, origin, region=region, quoted=True)
        bucket, _, key = path.partition("/")
        return _location(url, "s3", bucket, key, f"{origin}{bucket}/", region=region, quoted=True)
    return None


def _location(
    url: str,
    kind: Kind,
    bucket: str,
    key: str,
    root: str,
    *,
    account: str = "",
    region: str = "",
    quoted: bool = False,
) -> ObjectLocation:
    if not bucket or "/" in bucket:
        raise SourceError(f"{url}: no bucket or container in the URL")
    return ObjectLocation(url, kind, bucket, key, root, account, region, quoted)
