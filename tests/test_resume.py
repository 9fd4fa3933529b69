"""Exact mid-pass resume: first k samples + resumed rest == an uninterrupted pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datago import DatagoClient
from tests.conftest import file_config, write_images


def ids_of(client: DatagoClient, count: int | None = None) -> list[str]:
    ids: list[str] = []
    while count is None or len(ids) < count:
        sample = client.get_sample()
        if sample is None:
            break
        ids.append(sample.id)
    return ids


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
