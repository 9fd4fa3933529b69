"""Exact mid-pass resume: first k samples + resumed rest == an uninterrupted pass."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import datago.client
from datago import ConfigError, DatagoClient
from datago.engine import Cursor
from datago.sources.base import Partition
from tests.helpers import file_config, ids_of, path_of, write_images


@pytest.mark.parametrize("random_sampling", [False, True])
@pytest.mark.parametrize("k", [0, 1, 7, 19])
def test_resume_continues_exactly(tmp_path: Path, random_sampling: bool, k: int) -> None:
    write_images(tmp_path, 20)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff broken")
    config = file_config(tmp_path, random_sampling=random_sampling, samples_buffer_size=3)
    with DatagoClient(config) as client:
        full = ids_of(client)
        state = client.state_dict()
    assert state["epoch"] == 1  # the pass ended: the next start() begins pass 1
    with DatagoClient(config) as client:
        client.load_state_dict(
            json.loads(json.dumps({**state, "epoch": 0, "position": 0, "delivered": 0}))
        )
        assert ids_of(client) == full  # same seed, same pass: same order
    with DatagoClient(config) as client:
        client.load_state_dict({**state, "epoch": 0, "position": 0, "delivered": 0})
        head = ids_of(client, k)
        saved = json.loads(json.dumps(client.state_dict()))
    with DatagoClient(config) as resumed:
        resumed.load_state_dict(saved)
        rest = ids_of(resumed)
    assert head + rest == full
    assert len(full) == 20


def test_resume_respects_the_limit(tmp_path: Path) -> None:
    write_images(tmp_path, 30)
    config = file_config(tmp_path, limit=12, random_sampling=True, seed=4)
    with DatagoClient(config) as client:
        full = ids_of(client)
    with DatagoClient(config) as client:
        head = ids_of(client, 5)
        state = client.state_dict()
    with DatagoClient(config) as client:
        client.load_state_dict(state)
        rest = ids_of(client)
    assert len(full) == 12
    assert head + rest == full


def test_resume_in_a_later_pass_uses_that_pass_order(tmp_path: Path) -> None:
    write_images(tmp_path, 10)
    config = file_config(tmp_path, random_sampling=True)
    with DatagoClient(config) as client:
        first_pass = ids_of(client)
        client.start()
        second_head = ids_of(client, 4)
        state = client.state_dict()
        second_rest = ids_of(client)
    with DatagoClient(config) as client:
        client.load_state_dict(state)
        assert ids_of(client) == second_rest
    assert state["epoch"] == 1
    assert sorted(second_head + second_rest) == sorted(first_pass)
    assert second_head + second_rest != first_pass


SEEDED = [{}, {"random_sampling": True, "seed": 3}]


@pytest.mark.parametrize("sampling", SEEDED)
def test_state_dict_right_after_load_is_the_loaded_state(
    tmp_path: Path, sampling: dict[str, object]
) -> None:
    write_images(tmp_path, 12)
    config = file_config(tmp_path, **sampling)
    with DatagoClient(config) as client:
        full = ids_of(client)
    with DatagoClient(config) as client:
        head = ids_of(client, 4)
        saved = client.state_dict()
    with DatagoClient(config) as client:
        client.load_state_dict(saved)
        assert client.state_dict() == saved
        rest = ids_of(client)
    seed = sampling.get("seed", saved["seed"])  # unseeded: the client picked one
    assert saved == {
        "version": 2,
        "epoch": 0,
        "position": 4,
        "delivered": 4,
        "seed": seed,
        "source": {"index": 4, "after": path_of(full[3])},
        "config": {
            "source_type": "file",
            "split": [0, 1, 0, 1],
            "root_path": str(tmp_path),
            "random_sampling": bool(sampling),
        },
    }
    assert head + rest == full


@pytest.mark.parametrize("sampling", SEEDED)
@pytest.mark.parametrize("how", ["stop", "close", "with", "interrupt"])
def test_stopping_mid_pass_keeps_the_cursor(
    tmp_path: Path, how: str, sampling: dict[str, object]
) -> None:
    write_images(tmp_path, 12)
    config = file_config(tmp_path, samples_buffer_size=2, **sampling)
    with DatagoClient(config) as client:
        full = ids_of(client)
    client = DatagoClient(config)
    try:
        with client:
            head = ids_of(client, 5)
            if how == "interrupt":
                raise KeyboardInterrupt
            if how != "with":
                client.stop() if how == "stop" else client.close()
    except KeyboardInterrupt:
        assert how == "interrupt"
    saved = client.state_dict()
    with DatagoClient(config) as resumed:
        resumed.load_state_dict(saved)
        rest = ids_of(resumed)
    assert (saved["epoch"], saved["position"], saved["delivered"]) == (0, 5, 5)
    assert head + rest == full
    assert len(full) == 12


@pytest.mark.parametrize(
    ("world_size", "workers"), [(2, Partition()), (0, Partition(1, 2)), (3, Partition(0, 2))]
)
def test_a_split_random_reader_without_a_seed_cannot_save_its_state(
    tmp_path: Path, world_size: int, workers: Partition
) -> None:
    write_images(tmp_path, 8)
    config = file_config(tmp_path, random_sampling=True, world_size=world_size)
    with DatagoClient(config, workers=workers) as client:
        assert client.get_sample() is not None
        with pytest.raises(ConfigError, match=r"source_config\.seed"):
            client.state_dict()
    seeded = file_config(tmp_path, random_sampling=True, world_size=world_size, seed=9)
    with DatagoClient(seeded, workers=workers) as client:
        head = ids_of(client, 1)
        saved = client.state_dict()
        rest = ids_of(client)
    with DatagoClient(seeded, workers=workers) as client:
        client.load_state_dict(saved)
        assert head + ids_of(client) == head + rest
    assert saved["seed"] == 9


def test_concurrent_consumers_never_move_the_cursor_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_images(tmp_path, 60)
    per_thread, threads = 10, 4

    def slow_cursor(*args: Any, **kwargs: Any) -> Cursor:
        time.sleep(0.002)  # another consumer gets in while one moves the cursor
        return Cursor(*args, **kwargs)

    monkeypatch.setattr(datago.client, "Cursor", slow_cursor)
    with DatagoClient(file_config(tmp_path, samples_buffer_size=8)) as client:
        client.start()
        seen: list[list[int]] = []

        def read() -> None:
            positions = []
            for _ in range(per_thread):
                assert client.get_sample() is not None
                positions.append(int(client.state_dict()["position"] or 0))
            seen.append(positions)

        readers = [threading.Thread(target=read) for _ in range(threads)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(10)
        state = client.state_dict()
        rest = ids_of(client)
    taken = threads * per_thread
    assert (state["position"], state["delivered"]) == (taken, taken)
    assert len(rest) == 60 - taken
    assert len(seen) == threads
    assert all(positions == sorted(positions) for positions in seen)


def test_db_random_sampling_cannot_save_its_state() -> None:
    config = {"source_config": {"sources": "a", "page_size": 10, "random_sampling": True}}
    with DatagoClient(config) as client, pytest.raises(ConfigError, match="images/random/"):
        client.state_dict()
