"""Exact resume on webdataset shards: first k samples + resumed rest == an uninterrupted pass.

Local and HTTP shards, one and four concurrent downloads, in order and seeded-shuffled. The
shards hold a corrupt JPEG (a decode skip, which still takes a source position) and a sample
without an image (a source skip, which takes none).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from datago import DatagoClient
from datago.config import Environment
from tests.helpers import Server, ids_of, sample_members, write_tar

SHARDS, PER_SHARD = 6, 5
GOOD = SHARDS * PER_SHARD - 2  # less the corrupt JPEG and the sample without an image


def fast() -> Environment:
    """Quick retries; a stalled download fails after 0.5 s (the defaults: 0.1 s and 60 s)."""
    return replace(Environment.from_env(), backoff_base_s=0.01, stall_timeout_s=0.5)


def write_dataset(folder: Path) -> dict[str, bytes]:
    """`SHARDS` shards of `PER_SHARD` samples (keys s0000...), returned by file name."""
    for shard in range(SHARDS):
        samples = []
        for index in range(shard * PER_SHARD, (shard + 1) * PER_SHARD):
            members = sample_members(index)
            if index == 7:
                members["jpg"] = b"\xff\xd8\xff\xe0 not a jpeg"
            if index == 18:
                del members["jpg"]
            samples.append((f"s{index:04d}", members))
        write_tar(folder / f"shard-{shard:03d}.tar", samples)
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.tar"))}


@contextlib.contextmanager
def shard_url(folder: Path, transport: str) -> Iterator[str]:
    """The brace pattern of the shards, on disk or served over loopback HTTP."""
    files = write_dataset(folder)
    pattern = f"shard-{{000..{SHARDS - 1:03d}}}.tar"
    if transport == "local":
        yield str(folder / pattern)
        return
    with Server.files(files) as server:
        yield server.url + pattern


def wds_config(url: str, **options: Any) -> dict[str, Any]:
    source = {"url": url}
    config: dict[str, Any] = {"source_type": "webdataset", "samples_buffer_size": 3}
    for key, value in options.items():
        target = config if key == "limit" else source
        target[key] = value
    return {**config, "source_config": source}


def resumed_at(
    config: dict[str, Any], state: dict[str, Any], count: int | None = None
) -> list[str]:
    """The ids a fresh client delivers after loading `state` (passed through JSON)."""
    with DatagoClient(config, environment=fast()) as client:
        client.load_state_dict(json.loads(json.dumps(state)))
        return ids_of(client, count)


def check_every_split(config: dict[str, Any], full: list[str], points: list[int]) -> None:
    """For each k: stop after k samples, save, resume in a new client; nothing lost or repeated."""
    for k in points:
        with DatagoClient(config, environment=fast()) as client:
            head = ids_of(client, k)
            state = client.state_dict()
        assert (state["position"] or 0) >= k
        assert head + resumed_at(config, state) == full, k


@pytest.mark.parametrize("transport", ["local", "http"])
@pytest.mark.parametrize("downloads", [1, 4])
@pytest.mark.parametrize("random_sampling", [False, True])
def test_resume_continues_exactly(
    tmp_path: Path, transport: str, downloads: int, random_sampling: bool
) -> None:
    options: dict[str, Any] = {"concurrent_downloads": downloads}
    if random_sampling:
        options.update(random_sampling=True, seed=11, shuffle_buffer_size=7)
    with shard_url(tmp_path, transport) as url:
        config = wds_config(url, **options)
        with DatagoClient(config, environment=fast()) as client:
            full = ids_of(client)
            assert client.stats.skipped == 2
        assert len(set(full)) == len(full) == GOOD
        assert (full == sorted(full)) == (downloads == 1 and not random_sampling)
        with DatagoClient(config, environment=fast()) as client:
            assert ids_of(client) == full  # the order is reproducible whatever the timing
        check_every_split(config, full, [0, 1, 13, GOOD - 1])


def test_round_robin_order_over_four_slots(tmp_path: Path) -> None:
    with shard_url(tmp_path, "local") as url:
        config = wds_config(url, concurrent_downloads=4)
    with DatagoClient(config, environment=fast()) as client:
        ids = ids_of(client)
    keys = [[f"s{i:04d}" for i in range(s * PER_SHARD, (s + 1) * PER_SHARD)] for s in range(SHARDS)]
    keys[3].remove("s0018")  # no image: the source never yields it
    slots = [keys[0] + keys[4], keys[1] + keys[5], keys[2], keys[3]]  # slot j: shards j, j+4
    expected = [slot[i] for i in range(max(map(len, slots))) for slot in slots if i < len(slot)]
    assert ids == [key for key in expected if key != "s0007"]  # s0007: a decode skip


def test_resume_with_a_client_picked_seed(tmp_path: Path) -> None:
    with shard_url(tmp_path, "local") as url:
        config = wds_config(url, concurrent_downloads=3, random_sampling=True)
        with DatagoClient(config, environment=fast()) as client:
            head = ids_of(client, 9)
            state = client.state_dict()
            rest = ids_of(client)
        assert state["seed"] is not None
        assert resumed_at(config, state) == rest
        assert sorted(head + rest) == sorted(set(head + rest)) and len(head + rest) == GOOD


@pytest.mark.parametrize("transport", ["local", "http"])
def test_resume_respects_the_limit(tmp_path: Path, transport: str) -> None:
    with shard_url(tmp_path, transport) as url:
        config = wds_config(url, concurrent_downloads=4, random_sampling=True, seed=2, limit=12)
        with DatagoClient(config, environment=fast()) as client:
            full = ids_of(client)
        assert len(full) == 12
        check_every_split(config, full, [0, 1, 5, 11])
        with DatagoClient(config, environment=fast()) as client:
            assert len(ids_of(client, 12)) == 12
            state = client.state_dict()
        assert resumed_at(config, state) == []  # the limit was reached: nothing is left


@pytest.mark.parametrize("random_sampling", [False, True])
def test_state_after_a_finished_pass_resumes_into_the_next(
    tmp_path: Path, random_sampling: bool
) -> None:
    with shard_url(tmp_path, "local") as url:
        config = wds_config(url, concurrent_downloads=4, random_sampling=random_sampling, seed=5)
        with DatagoClient(config, environment=fast()) as client:
            first = ids_of(client)
            state = client.state_dict()
            client.start()
            second_head = ids_of(client, 6)
            middle = client.state_dict()
            second_rest = ids_of(client)
        second = second_head + second_rest
        assert (state["epoch"], state["position"], middle["epoch"]) == (1, 0, 1)
        assert resumed_at(config, state) == second
        assert resumed_at(config, middle) == second_rest
        assert sorted(second) == sorted(first)
        assert (second != first) == random_sampling  # a new epoch, a new order when shuffled


def test_ranks_resume_with_the_user_seed(tmp_path: Path) -> None:
    with shard_url(tmp_path, "local") as url:
        everything: list[str] = []
        for rank in range(2):
            options = {"random_sampling": True, "seed": 9, "rank": rank, "world_size": 2}
            config = wds_config(url, concurrent_downloads=2, **options)
            with DatagoClient(config, environment=fast()) as client:
                full = ids_of(client)
            check_every_split(config, full, [4])
            everything += full
        assert sorted(everything) == sorted(set(everything)) and len(everything) == GOOD
