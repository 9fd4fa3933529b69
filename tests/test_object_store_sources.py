"""The webdataset and file sources on an S3 bucket: moto's server on loopback, behind a proxy
that logs (and breaks) every request, read through the public `DatagoClient`.

Shards by brace URL and by prefix listing, a folder split over two ranks, resume by ranged
reads (counted at the proxy), faults (a 503 burst, a reset mid-object, a 403), credentials
from `storage_options` or the environment, and bad input named in a `SourceError`.
"""

from __future__ import annotations

import gzip
import json
import tarfile
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import unquote

import pytest

from datago import ConfigError, DatagoClient, SourceError
from datago.config import ClientConfig, Environment
from datago.sources import files as files_source
from tests.helpers import encode, ids_of, photo, sample_spans, write_noisy_shards
from tests.helpers.object_stores import (
    KEYS,
    Fault,
    MotoS3,
    S3Proxy,
    Seen,
    moto_s3,
    proxy_in_thread,
    s3_error,
)

pytestmark = pytest.mark.usefixtures("no_aws_environment")

BUCKET = "train"
SHARDS, PER_SHARD = 6, 50  # samples sNNNN of a JPEG and 24 KB of noise
MANY = [f"many/{i:05d}.jpg" for i in range(2500)]  # three listing pages
BIG = [f"big/{i:03d}.jpg" for i in range(80)]  # "big": the read-ahead is cut to fit them
BIG_JPEG = encode(photo(64, 48), "JPEG")
IMAGES = {f"imgs/{'ab'[i % 2]}/{i:03d}.jpg": (16 + i % 5, 12 + i % 3) for i in range(30)}


@pytest.fixture(scope="module")
def shard_bytes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    return write_noisy_shards(tmp_path_factory.mktemp("shards"), SHARDS, PER_SHARD)


@pytest.fixture(scope="module")
def moto(shard_bytes: dict[str, bytes]) -> Iterator[MotoS3]:
    with moto_s3() as server:
        server.create_bucket(BUCKET)
        for name, data in shard_bytes.items():
            server.put(BUCKET, f"wds/{name}", data)
        server.put(BUCKET, "wds/README.txt", b"not a shard")
        server.put(BUCKET, "mixed/b.tar.gz", gzip.compress(shard_bytes["shard-001.tar"]))
        server.put(BUCKET, "mixed/a.tar", shard_bytes["shard-000.tar"])
        for name in ("shard-000.tar", "shard-001.tar"):
            server.put(BUCKET, f"grow/{name}", shard_bytes[name])
        for key, (width, height) in IMAGES.items():
            server.put(BUCKET, key, encode(photo(width, height, seed=len(key)), "JPEG"))
        server.put(BUCKET, "imgs/notes.txt", b"not an image")
        server.put_many(BUCKET, MANY, encode(photo(8, 8), "JPEG"))
        server.put_many(BUCKET, BIG, BIG_JPEG)
        server.create_bucket("open-data", public=True)
        server.put("open-data", "one/shard.tar", shard_bytes["shard-002.tar"], public=True)
        yield server


@pytest.fixture
def proxy(moto: MotoS3) -> Iterator[S3Proxy]:
    with proxy_in_thread(moto.endpoint) as server:
        yield server


def fast() -> Environment:
    return replace(Environment.from_env(), backoff_base_s=0.01, stall_timeout_s=5.0)


def signed(proxy: S3Proxy) -> dict[str, Any]:
    return {"endpoint": proxy.endpoint, "region": "us-east-1", **KEYS}


def wds(proxy: S3Proxy, url: str, **source: Any) -> dict[str, Any]:
    source = {"url": url, "storage_options": signed(proxy), "concurrent_downloads": 1, **source}
    return {"source_type": "webdataset", "source_config": source, "samples_buffer_size": 8}


def files(proxy: S3Proxy, **source: Any) -> dict[str, Any]:
    source = {"root_path": f"s3://{BUCKET}/imgs", "storage_options": signed(proxy), **source}
    return {"source_type": "file", "source_config": source, "samples_buffer_size": 8}


def read_all(config: dict[str, Any]) -> tuple[list[str], DatagoClient]:
    with DatagoClient(config, environment=fast()) as client:
        return [plain(id) for id in ids_of(client)], client


def plain(sample_id: str) -> str:
    """A file source's id as a path (the drop-in API quotes it as JSON text)."""
    return str(json.loads(sample_id)) if sample_id.startswith('"') else sample_id


def gets(proxy: S3Proxy, key_part: str = "") -> list[Seen]:
    return [
        seen
        for seen in proxy.of("GET")
        if "list-type" not in seen.path_qs and key_part in seen.path
    ]


def lists(proxy: S3Proxy) -> list[Seen]:
    return [seen for seen in proxy.of("GET") if "list-type" in seen.path_qs]


ALL_KEYS = [f"s{i:04d}" for i in range(SHARDS * PER_SHARD)]


def test_shards_by_brace_url_stream_every_sample_with_one_get_each(
    proxy: S3Proxy, shard_bytes: dict[str, bytes]
) -> None:
    ids, client = read_all(wds(proxy, f"s3://{BUCKET}/wds/shard-{{000..005}}.tar"))
    assert ids == ALL_KEYS
    log = [(seen.path, seen.headers.get("Range"), seen.status, seen.sent) for seen in gets(proxy)]
    assert sorted(seen.path for seen in gets(proxy)) == [
        f"/{BUCKET}/wds/shard-{i:03d}.tar" for i in range(SHARDS)
    ], log
    assert lists(proxy) == []  # named shards are not listed
    # Each shard is read to its tar end; the zero blocks after it may arrive or be dropped.
    total = sum(map(len, shard_bytes.values()))
    slack = len(shard_bytes) * tarfile.RECORDSIZE
    assert total - slack <= client.stats.bytes_fetched <= total, log
    assert all(str(seen.credential).startswith("testing-key/") for seen in gets(proxy))


@pytest.mark.parametrize("url", [f"s3://{BUCKET}/wds/", f"s3://{BUCKET}/wds/shard-"])
def test_a_prefix_lists_its_shards_sorted_and_reads_only_them(proxy: S3Proxy, url: str) -> None:
    ids, _ = read_all(wds(proxy, url))
    assert ids == ALL_KEYS
    assert len(lists(proxy)) == 1
    assert gets(proxy, "README") == []


def test_a_prefix_takes_plain_and_gzipped_shards_in_key_order(proxy: S3Proxy) -> None:
    ids, _ = read_all(wds(proxy, f"s3://{BUCKET}/mixed/"))
    assert ids == ALL_KEYS[: 2 * PER_SHARD]  # a.tar holds shard 0, b.tar.gz shard 1


def test_an_anonymous_client_reads_a_public_bucket_unsigned(proxy: S3Proxy) -> None:
    options = {"endpoint": proxy.endpoint, "region": "us-east-1", "anonymous": True}
    ids, _ = read_all(wds(proxy, "s3://open-data/one/", storage_options=options))
    assert ids == ALL_KEYS[2 * PER_SHARD : 3 * PER_SHARD]
    assert proxy.requests and all(seen.credential is None for seen in proxy.requests)


def test_credentials_and_a_plain_http_endpoint_come_from_the_environment(
    proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    config = wds(proxy, f"s3://{BUCKET}/wds/shard-000.tar")
    del config["source_config"]["storage_options"]
    ids, _ = read_all(config)
    assert ids == ALL_KEYS[:PER_SHARD]
    assert str(gets(proxy)[0].credential).startswith("env-key/")


@pytest.mark.parametrize("sampling", [{}, {"random_sampling": True, "seed": 3}])
def test_a_bucket_folder_split_over_two_ranks_is_disjoint_and_complete(
    proxy: S3Proxy, sampling: dict[str, Any]
) -> None:
    seen: dict[str, tuple[int, int]] = {}
    per_rank = []
    for rank in (0, 1):
        config = files(proxy, rank=rank, world_size=2, **sampling)
        with DatagoClient(config, environment=fast()) as client:
            ids = []
            while (sample := client.get_sample()) is not None:
                ids.append(plain(sample.id))
                seen[plain(sample.id)] = (sample.image.width, sample.image.height)
        per_rank.append(ids)
    urls = {f"s3://{BUCKET}/{key}": size for key, size in IMAGES.items()}
    assert not set(per_rank[0]) & set(per_rank[1])
    assert seen == urls  # every image once, with its own pixels' size
    if not sampling:
        assert per_rank[0] + per_rank[1] != sorted(urls)  # interleaved, not halves
        assert sorted(per_rank[0]) == per_rank[0]
    assert gets(proxy, "notes") == []


def test_a_large_prefix_gives_its_first_samples_after_one_listing_page(proxy: S3Proxy) -> None:
    config = files(proxy, root_path=f"s3://{BUCKET}/many/")
    with DatagoClient(config, environment=fast()) as client:
        first = [plain(client.get_sample().id) for _ in range(3)]  # type: ignore[union-attr]
        time.sleep(0.3)  # the source may read ahead, but only a bounded window
        pages, reads = len(lists(proxy)), len(gets(proxy))
    assert first == [f"s3://{BUCKET}/{key}" for key in MANY[:3]]
    assert pages == 1 and reads < 200


def test_the_read_ahead_of_big_objects_fits_its_byte_bound(
    proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files_source, "READ_AHEAD_BYTES", 3 * len(BIG_JPEG))  # a window of 3
    config = files(proxy, root_path=f"s3://{BUCKET}/big/") | {
        "samples_buffer_size": 1,
        "prefetch_buffer_size": 1,
    }
    with DatagoClient(config, environment=fast()) as client:
        first = [plain(client.get_sample().id) for _ in range(5)]  # type: ignore[union-attr]
        time.sleep(0.5)  # what the pipeline reads ahead, it has read by now
        reads = len(gets(proxy))
        rest = [plain(sample.id) for sample in client]
    assert first + rest == [f"s3://{BUCKET}/{key}" for key in BIG]
    # taken, the engine's buffers and decode window, 3 read ahead; 64 ahead would read all 80
    assert reads <= 40


def test_random_sampling_a_bucket_folder_is_a_seeded_permutation(proxy: S3Proxy) -> None:
    first, _ = read_all(files(proxy, random_sampling=True, seed=5))
    again, _ = read_all(files(proxy, random_sampling=True, seed=5))
    other, _ = read_all(files(proxy, random_sampling=True, seed=6))
    assert first == again and first != other and sorted(first) == sorted(other)
    assert sorted(first) == sorted(f"s3://{BUCKET}/{key}" for key in IMAGES)


def test_resuming_shards_reads_each_left_shard_once_from_a_sample_start(
    moto: MotoS3, shard_bytes: dict[str, bytes]
) -> None:
    url = f"s3://{BUCKET}/wds/shard-{{000..005}}.tar"
    with proxy_in_thread(moto.endpoint) as proxy:
        full, _ = read_all(wds(proxy, url, concurrent_downloads=2))
    with (
        proxy_in_thread(moto.endpoint) as proxy,
        DatagoClient(wds(proxy, url, concurrent_downloads=2), environment=fast()) as client,
    ):
        head = ids_of(client, 170)
        state = json.loads(json.dumps(client.state_dict()))
    with proxy_in_thread(moto.endpoint) as proxy:
        with DatagoClient(wds(proxy, url, concurrent_downloads=2), environment=fast()) as client:
            client.load_state_dict(state)
            rest = ids_of(client)
            fetched = client.stats.bytes_fetched
        requests = gets(proxy)
    assert head + rest == full and sorted(full) == ALL_KEYS
    spans = {name: sample_spans(data) for name, data in shard_bytes.items()}
    shard_of = {key: name for name, keys in spans.items() for key in keys}
    left = {shard_of[key] for key in rest}
    assert sorted(seen.path.rsplit("/", 1)[1] for seen in requests) == sorted(left)
    for seen in requests:  # each from the first sample not delivered yet: a ranged read
        name = seen.path.rsplit("/", 1)[1]
        starts = {spans[name][key][0] for key in rest if shard_of[key] == name}
        assert seen.range_start in starts | {0}, (name, seen.headers.get("Range"))
    assert any(seen.range_start for seen in requests)
    assert fetched == sum(seen.sent for seen in requests)
    assert fetched < 0.5 * sum(map(len, shard_bytes.values()))


def test_a_listed_prefix_resumes_and_refuses_a_state_of_other_shards(
    moto: MotoS3, shard_bytes: dict[str, bytes]
) -> None:
    url = f"s3://{BUCKET}/grow/"
    with (
        proxy_in_thread(moto.endpoint) as proxy,
        DatagoClient(wds(proxy, url), environment=fast()) as client,
    ):
        head = ids_of(client, 30)
        state = json.loads(json.dumps(client.state_dict()))
    assert len(state["source"]["listing"]) == 16  # the listed shards' digest
    with (
        proxy_in_thread(moto.endpoint) as proxy,
        DatagoClient(wds(proxy, url), environment=fast()) as client,
    ):
        client.load_state_dict(state)
        rest = ids_of(client)
    assert head + rest == ALL_KEYS[: 2 * PER_SHARD]
    moto.put(BUCKET, "grow/shard-000a.tar", shard_bytes["shard-002.tar"])  # sorts second
    with (
        proxy_in_thread(moto.endpoint) as proxy,
        DatagoClient(wds(proxy, url), environment=fast()) as client,
    ):
        client.load_state_dict(state)
        with pytest.raises(SourceError, match="changed since the state was saved"):
            list(client)


def test_resuming_a_bucket_folder_reads_only_the_files_left(moto: MotoS3) -> None:
    with (
        proxy_in_thread(moto.endpoint) as proxy,
        DatagoClient(files(proxy), environment=fast()) as client,
    ):
        head = [plain(i) for i in ids_of(client, 11)]
        state = json.loads(json.dumps(client.state_dict()))
    with proxy_in_thread(moto.endpoint) as proxy:
        with DatagoClient(files(proxy), environment=fast()) as client:
            client.load_state_dict(state)
            rest = [plain(i) for i in ids_of(client)]
        read = sorted(f"s3:/{seen.path}" for seen in gets(proxy))
    assert head + rest == sorted(f"s3://{BUCKET}/{key}" for key in IMAGES)
    assert read == sorted(rest)


def test_a_503_burst_is_retried_and_loses_nothing(proxy: S3Proxy) -> None:
    burst = [4]

    def slow_down(seen: Seen) -> Fault | None:
        if seen.method != "GET" or "list-type" in seen.path_qs or burst[0] == 0:
            return None
        burst[0] -= 1
        return s3_error(503, "SlowDown")

    proxy.fault = slow_down
    config = wds(proxy, f"s3://{BUCKET}/wds/shard-{{000..002}}.tar")
    with DatagoClient(config, environment=replace(fast(), max_retries=5)) as client:
        ids = ids_of(client)
    assert ids == ALL_KEYS[: 3 * PER_SHARD]
    assert client.stats.source_errors == 0
    assert [seen.status for seen in gets(proxy, "shard-000")] == [503] * 4 + [200]


def test_a_reset_mid_shard_resumes_with_a_ranged_read(proxy: S3Proxy) -> None:
    cut = [True]

    def reset(seen: Seen) -> Fault | None:
        if seen.path.endswith("shard-001.tar") and cut[0]:
            cut[0] = False
            return Fault(cut_after=1_200_000)
        return None

    proxy.fault = reset
    ids, client = read_all(wds(proxy, f"s3://{BUCKET}/wds/shard-{{000..002}}.tar"))
    assert ids == ALL_KEYS[: 3 * PER_SHARD]
    asked = [seen.range_start for seen in gets(proxy, "shard-001")]
    # resumed at the last byte delivered, which the cut bounds
    assert len(asked) == 2 and asked[0] == 0 and 0 < asked[1] <= 1_200_000
    assert client.stats.source_errors == 0


def test_a_denied_shard_is_counted_once_not_retried_and_the_rest_go_on(proxy: S3Proxy) -> None:
    def deny(seen: Seen) -> Fault | None:
        return s3_error(403, "AccessDenied") if "shard-001" in seen.path else None

    proxy.fault = deny
    ids, client = read_all(wds(proxy, f"s3://{BUCKET}/wds/shard-{{000..002}}.tar"))
    assert ids == ALL_KEYS[:PER_SHARD] + ALL_KEYS[2 * PER_SHARD : 3 * PER_SHARD]
    assert client.stats.source_errors == 1
    assert len(gets(proxy, "shard-001")) == 1


def test_a_denied_file_ends_the_stream_with_its_url_and_status(proxy: S3Proxy) -> None:
    proxy.fault = lambda seen: s3_error(403, "AccessDenied") if "007" in seen.path else None
    with (
        DatagoClient(files(proxy), environment=fast()) as client,
        pytest.raises(SourceError) as caught,
    ):
        list(client)  # iterating raises what the pass failed with
    assert f"s3://{BUCKET}/imgs/b/007.jpg" in str(caught.value)
    assert "HTTP 403 (AccessDenied)" in str(caught.value)
    assert len(gets(proxy, "007")) == 1


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"url": "s3://no-such-bucket/wds/"}, "s3://no-such-bucket/wds/: HTTP 404"),
        ({"url": f"s3://{BUCKET}/nothing/"}, "no .tar or .tar.gz shard"),
        ({"root_path": "s3://no-such-bucket/imgs"}, "the bucket does not exist"),
    ],
)
def test_a_missing_bucket_or_empty_prefix_is_a_source_error_naming_it(
    proxy: S3Proxy, source: dict[str, Any], message: str
) -> None:
    source_type = "webdataset" if "url" in source else "file"
    config = {
        "source_type": source_type,
        "source_config": {**source, "storage_options": signed(proxy)},
    }
    with (
        DatagoClient(config, environment=fast()) as client,
        pytest.raises(SourceError, match=message),
    ):
        list(client)
    assert len(proxy.requests) == 1  # a 404 is not retried


def test_an_unknown_scheme_or_option_is_a_config_error(proxy: S3Proxy) -> None:
    with (
        pytest.raises(ConfigError, match="ftp://"),
        DatagoClient(wds(proxy, "ftp://host/shard.tar"), environment=fast()) as client,
    ):
        list(client)
    config = wds(proxy, f"s3://{BUCKET}/wds/", storage_options={"acess_key_id": "typo"})
    with (
        pytest.raises(ConfigError, match="acess_key_id"),
        DatagoClient(config, environment=fast()) as client,
    ):
        list(client)


def test_storage_options_must_be_an_object() -> None:
    config = {
        "source_type": "file",
        "source_config": {"root_path": "s3://b/", "storage_options": 1},
    }
    with pytest.raises(ConfigError, match="storage_options must be of type object"):
        ClientConfig.from_dict(config)


def test_upstreams_gcs_listing_url_lists_and_reads_unsigned(
    proxy: S3Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GCS's XML API is S3's: moto stands in for storage.googleapis.com via `base_url`."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    url = "https://storage.googleapis.com/storage/v1/b/open-data/o?prefix=one/"
    ids, _ = read_all(wds(proxy, url, storage_options={"base_url": proxy.endpoint}))
    assert ids == ALL_KEYS[2 * PER_SHARD : 3 * PER_SHARD]
    assert [unquote(seen.path_qs.split("?")[0]) for seen in gets(proxy)] == [
        "/open-data/one/shard.tar"
    ]
    assert len(lists(proxy)) == 1
    assert all(seen.credential is None for seen in proxy.requests)
