"""Resume seeks: a resumed pass fetches only what was not delivered, counted at the source.

Six webdataset shards of 50 samples (~25 KB each); saved after 280 samples, resumed in a new
client on a new server: the ids must be exactly the rest of an uninterrupted pass, and the
server (or, on disk, the storage) must send only the shards in flight, from the saved
offsets: at most 20 % of the data set's bytes.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from datago import ConfigError, DatagoClient, SourceError
from datago.config import Environment
from datago.dataroom_server import make_app
from datago.sources import SOURCES
from datago.sources.base import RawSample, SourceContext
from tests.helpers import (
    ScriptedSource,
    Server,
    file_config,
    ids_of,
    path_of,
    sample_spans,
    small_jpeg,
    write_catalogue,
    write_images,
    write_noisy_shards,
)

SHARDS, PER_SHARD, SAVED_AT = 6, 50, 280
TOTAL = SHARDS * PER_SHARD
TOKEN = "s3cret"


def fast() -> Environment:
    return replace(Environment.from_env(), backoff_base_s=0.01, stall_timeout_s=5.0)


def config_of(url: str, **source: Any) -> dict[str, Any]:
    return {
        "source_type": "webdataset",
        "source_config": {"url": url, **source},
        "samples_buffer_size": 8,
        "prefetch_buffer_size": 8,
    }


def interrupted(config: dict[str, Any], count: int) -> tuple[list[str], dict[str, Any]]:
    with DatagoClient(config, environment=fast()) as client:
        head = ids_of(client, count)
        return head, json.loads(json.dumps(client.state_dict()))


def uninterrupted(config: dict[str, Any], **options: Any) -> list[str]:
    with DatagoClient(config, **options) as client:
        return ids_of(client)


def resumed(config: dict[str, Any], state: dict[str, Any]) -> tuple[list[str], int]:
    """The ids after `state`, and the bytes the source fetched for them."""
    with DatagoClient(config, environment=fast()) as client:
        client.load_state_dict(state)
        rest = ids_of(client)
        return rest, client.stats.bytes_fetched


@contextlib.contextmanager
def served(files: dict[str, bytes], ranges: bool = True) -> Iterator[tuple[str, Server]]:
    with Server.files(files, ranges=ranges) as server:
        yield server.url, server


def reads(server: Server) -> list[tuple[str, str | None]]:
    """(file name, Range header) of every request the server got."""
    return [(seen.name, seen.range) for seen in server.requests]


SHUFFLED = {"random_sampling": True, "seed": 7}
SAMPLINGS = [{}, SHUFFLED, {**SHUFFLED, "shuffle_buffer_size": 16}]


@pytest.mark.parametrize("downloads", [1, 3])
@pytest.mark.parametrize("sampling", SAMPLINGS, ids=["in-order", "shuffled", "buffer-16"])
def test_resuming_over_http_requests_only_what_is_left(
    tmp_path: Path, downloads: int, sampling: dict[str, Any]
) -> None:
    files = write_noisy_shards(tmp_path, SHARDS, PER_SHARD)
    pattern = f"shard-{{000..{SHARDS - 1:03d}}}.tar"
    options = {"concurrent_downloads": downloads, **sampling}
    with served(files) as (base, _):
        full = uninterrupted(config_of(base + pattern, **options), environment=fast())
    with served(files) as (base, _):
        head, state = interrupted(config_of(base + pattern, **options), SAVED_AT)
    with served(files) as (base, server):
        rest, fetched = resumed(config_of(base + pattern, **options), state)
    assert len(full) == TOTAL and head + rest == full
    spans = {name: sample_spans(data) for name, data in files.items()}
    shard_of = {key: name for name, keys in spans.items() for key in keys}
    assert {path for path, _ in reads(server)} == {shard_of[key] for key in rest}
    for path, asked in reads(server):  # every read starts at a sample not delivered yet
        assert asked is not None
        first, _, last = asked.removeprefix("bytes=").partition("-")
        left = [spans[path][key] for key in rest if shard_of[key] == path]
        assert int(first) in {start for start, _ in left}, (path, asked)
        if last:  # buffered samples read back: the read ends with one of them
            assert int(last) + 1 in {end for _, end in left}, (path, asked)
    total = sum(map(len, files.values()))
    assert server.sent() <= 0.2 * total
    assert fetched == server.sent()  # the client's count is the server's


@pytest.mark.parametrize("downloads", [1, 3])
@pytest.mark.parametrize("sampling", SAMPLINGS[:2], ids=["in-order", "shuffled"])
def test_resuming_local_shards_reads_only_what_is_left(
    tmp_path: Path, downloads: int, sampling: dict[str, Any]
) -> None:
    files = write_noisy_shards(tmp_path, SHARDS, PER_SHARD)
    config = config_of(str(tmp_path / f"shard-{{000..{SHARDS - 1:03d}}}.tar"), **sampling)
    config["source_config"]["concurrent_downloads"] = downloads
    full = uninterrupted(config)
    head, state = interrupted(config, SAVED_AT)
    rest, fetched = resumed(config, state)
    assert head + rest == full
    assert 0 < fetched <= 0.2 * sum(map(len, files.values()))


def test_a_server_ignoring_range_is_read_from_the_start_but_not_parsed(tmp_path: Path) -> None:
    files = write_noisy_shards(tmp_path, SHARDS, PER_SHARD)
    pattern = f"shard-{{000..{SHARDS - 1:03d}}}.tar"
    with served(files) as (base, _):
        config = config_of(base + pattern, concurrent_downloads=1)
        full = uninterrupted(config, environment=fast())
        head, state = interrupted(config, SAVED_AT)
    with served(files, ranges=False) as (base, server):
        rest, fetched = resumed(config_of(base + pattern, concurrent_downloads=1), state)
    assert head + rest == full
    assert [(path, asked is not None) for path, asked in reads(server)] == [("shard-005.tar", True)]
    assert fetched == server.sent() == len(files["shard-005.tar"])


def test_a_gzipped_shard_resumes_from_its_start_without_the_finished_ones(
    tmp_path: Path,
) -> None:
    files = write_noisy_shards(tmp_path, SHARDS, PER_SHARD, gzipped=True)
    pattern = f"shard-{{000..{SHARDS - 1:03d}}}.tar.gz"
    with served(files) as (base, _):
        config = config_of(base + pattern, concurrent_downloads=1)
        full = uninterrupted(config, environment=fast())
        head, state = interrupted(config, SAVED_AT)
    assert state["source"]["gzipped"] == [SHARDS - 1]
    with served(files) as (base, server):
        rest, _ = resumed(config_of(base + pattern, concurrent_downloads=1), state)
    assert head + rest == full
    assert reads(server) == [("shard-005.tar.gz", None)]


def test_the_webdataset_state_names_slots_offsets_and_the_buffer(tmp_path: Path) -> None:
    files = write_noisy_shards(tmp_path, SHARDS, PER_SHARD)
    url = str(tmp_path / f"shard-{{000..{SHARDS - 1:03d}}}.tar")
    _, state = interrupted(config_of(url, concurrent_downloads=2), 101)
    spans = sample_spans(files["shard-002.tar"])
    # slot 0 read shards 0 and 2: 51 samples, the next is s0101 (the 2nd of shard 2)
    assert state["source"] == {
        "slots": [[2, spans["s0101"][0], 1], [3, 0, 0]],
        "turn": 1,
        "taken": 0,
        "buffer": [],
        "gzipped": [],
    }
    assert (state["version"], state["position"], state["delivered"]) == (2, 101, 101)
    shuffled = config_of(url, random_sampling=True, seed=3, shuffle_buffer_size=5)
    _, state = interrupted(shuffled, 40)
    assert state["source"]["taken"] == 45 and len(state["source"]["buffer"]) == 5


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"url": "other-{000..005}.tar"}, "source_config.url"),
        ({"concurrent_downloads": 4}, "source_config.concurrent_downloads"),
        ({"seed": 8}, "source_config.seed"),
        ({"random_sampling": False}, "source_config.random_sampling"),
        ({"world_size": 2}, "split"),
    ],
)
def test_a_state_of_another_config_names_what_differs(
    tmp_path: Path, change: dict[str, Any], named: str
) -> None:
    write_noisy_shards(tmp_path, SHARDS, PER_SHARD)
    config = config_of(
        str(tmp_path / f"shard-{{000..{SHARDS - 1:03d}}}.tar"),
        concurrent_downloads=2,
        random_sampling=True,
        seed=7,
    )
    _, state = interrupted(config, 10)
    other = json.loads(json.dumps(config))
    if "url" in change:
        change = {"url": str(tmp_path / change["url"])}
    other["source_config"].update(change)
    with DatagoClient(other) as client, pytest.raises(ConfigError, match=named):
        client.load_state_dict(state)


def test_a_state_of_an_unknown_version_is_refused(tmp_path: Path) -> None:
    write_images(tmp_path, 3)
    with (
        DatagoClient(file_config(tmp_path)) as client,
        pytest.raises(ConfigError, match="version 9"),
    ):
        client.load_state_dict({"version": 9, "epoch": 0})


@pytest.mark.parametrize("random_sampling", [False, True])
def test_resuming_files_reads_only_the_files_left(tmp_path: Path, random_sampling: bool) -> None:
    paths = write_images(tmp_path, 30)
    config = file_config(tmp_path, random_sampling=random_sampling, seed=5)
    full = uninterrupted(config)
    head, state = interrupted(config, 21)
    with DatagoClient(config) as client:
        client.load_state_dict(state)
        rest = ids_of(client)
        read = client.stats.bytes_read
    assert head + rest == full and sorted(full) == paths
    assert read == sum(Path(path_of(sample_id)).stat().st_size for sample_id in rest)
    assert state["source"] == {"index": 21, "after": path_of(full[20])}


def test_a_folder_changed_since_the_state_is_an_error_not_a_silent_shift(tmp_path: Path) -> None:
    write_images(tmp_path, 10)
    _, state = interrupted(file_config(tmp_path), 4)
    (tmp_path / "img_0000.jpg").unlink()  # every later file moves up one place
    with DatagoClient(file_config(tmp_path)) as client:
        client.load_state_dict(state)
        with pytest.raises(SourceError, match="root_path changed"):
            list(client)  # ours raises; the wheel's `get_sample()` would log and give None


def test_a_source_that_cannot_seek_is_replayed_and_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    jpegs = [small_jpeg(i) for i in range(12)]

    async def twelve(context: SourceContext) -> Any:
        opened.append(0)
        for index, data in enumerate(jpegs):
            opened[-1] += 1
            yield RawSample(id=f"r{index}", source="test", image=data)

    monkeypatch.setitem(SOURCES, "file", ScriptedSource(twelve))
    config = file_config(tmp_path)
    full = uninterrupted(config)
    head, state = interrupted(config, 5)
    assert state["source"] is None and state["position"] == 5
    assert head + resumed(config, state)[0] == full
    assert opened[-1] == 12  # the resumed pass read the source from its start


async def test_resuming_the_db_source_starts_at_its_page_and_downloads_nothing_delivered(
    tmp_path: Path,
) -> None:
    write_catalogue(tmp_path / "data")  # alpha and beta: 45 items, pages of 10
    source = {"sources": "alpha,beta", "page_size": 10, "require_images": True}
    config = {"source_type": "db", "source_config": source, "samples_buffer_size": 4}
    async with Server(make_app(tmp_path / "data", token=TOKEN)) as api:
        environment = Environment(dataroom_api_url=api.url + "api/", dataroom_api_key=TOKEN)
        with DatagoClient(config, environment=environment) as client:
            full = [sample.id async for sample in client]
        async with DatagoClient(config, environment=environment) as client:
            head = [(await client.aget_sample()).id for _ in range(27)]  # type: ignore[union-attr]
            state = json.loads(json.dumps(client.state_dict()))
        # The API shares this loop: the head client's prefetches are answered, and logged,
        # before the log is cleared (under load they came after it).
        await api.settle()
        api.requests.clear()
        with DatagoClient(config, environment=environment) as client:
            client.load_state_dict(state)
            rest = [sample.id async for sample in client]
    assert len(full) == 45 and head + rest == full
    media = [unquote(s.path.removeprefix("/media/")) for s in api.requests if "/media/" in s.path]
    assert sorted(media) == rest  # not one image of a delivered item
    pages = [seen.query for seen in api.requests if seen.path.startswith("/api/")]
    assert pages[0]["cursor"] == full[19]  # page 3 (items 20-29) holds the 27th
    assert len(pages) == 4  # pages 3, 4, 5 and the empty last one: none before the cursor
    assert state["source"]["taken"] == 7 and state["source"]["number"] == 3


def test_a_shuffle_buffer_over_gzipped_shards_is_read_back_from_their_starts(
    tmp_path: Path,
) -> None:
    files = write_noisy_shards(tmp_path, SHARDS, PER_SHARD, gzipped=True)
    pattern = f"shard-{{000..{SHARDS - 1:03d}}}.tar.gz"
    options = {**SHUFFLED, "shuffle_buffer_size": 16, "concurrent_downloads": 2}
    with served(files) as (base, _):
        config = config_of(base + pattern, **options)
        full = uninterrupted(config, environment=fast())
        head, state = interrupted(config, 150)
    assert len(state["source"]["buffer"]) == 16 and state["source"]["gzipped"]
    with served(files) as (base, server):
        rest, _ = resumed(config_of(base + pattern, **options), state)
    assert head + rest == full
    assert all(asked is None for _, asked in reads(server))  # no Range into a gzip stream
