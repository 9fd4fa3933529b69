"""What a pass holds in memory: bounded by the sink, the window and the byte budget."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from datago import DatagoClient, builder
from datago.dispatch import CHUNK_SIZE, WINDOW_PER_THREAD
from datago.sources.base import RawSample
from tests.helpers import big_jpegs, encode, file_config, photo, write_tar

BIG = 4000 * 3000 * 3
"""Bytes of one of `big_jpegs` decoded."""


def test_slow_consumer_bounds_the_decoded_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAGO_MAX_TASKS", "1")
    data = encode(photo(32, 24))
    for i in range(400):
        (tmp_path / f"{i:03d}.jpg").write_bytes(data)
    config = file_config(tmp_path, samples_buffer_size=1, prefetch_buffer_size=1)
    with DatagoClient(config) as client:
        assert client.get_sample() is not None
        time.sleep(0.5)  # a slow consumer: room for hundreds of decodes meanwhile
        built = client.stats.bytes_read // len(data)
        assert client.get_sample() is not None
    in_flight = WINDOW_PER_THREAD * CHUNK_SIZE  # decoded, waiting for their turn
    assert 2 <= built <= 1 + 1 + in_flight  # taken + in the sink + in the window


def read_so_far(client: DatagoClient, file_size: int) -> int:
    """Samples the decode threads have read (every file has the same size)."""
    return client.stats.bytes_read // file_size


def test_big_images_and_a_slow_consumer_stay_within_the_byte_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAGO_MAX_TASKS", "4")
    big_jpegs(tmp_path, 8)
    file_size = (tmp_path / "huge_00.jpg").stat().st_size
    budget = 4 * BIG
    config = file_config(
        tmp_path, samples_buffer_size=4, prefetch_buffer_size=4, max_buffer_bytes=budget
    )
    held, read = [], []
    with DatagoClient(config) as client:
        for sample in client:
            assert sample.image.to_numpy().shape == (3000, 4000, 3)
            time.sleep(0.3)  # the threads have time to fill whatever they may
            held.append(client.stats.bytes_held)
            read.append(read_so_far(client, file_size))
        stats = client.stats
    assert stats.samples == 8
    assert max(held) <= stats.peak_bytes_held <= budget
    assert stats.peak_bytes_held >= 3 * BIG  # the budget was used, not left idle
    # Taken so far + at most 3 more (in hand, ready or in flight: 4 fit with their estimates
    # of encoded + decoded bytes only when one is in hand, already taken).
    assert all(count <= taken + 3 for taken, count in enumerate(read, start=1))


def test_a_sample_bigger_than_the_budget_still_comes_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAGO_MAX_TASKS", "2")
    big_jpegs(tmp_path, 3)
    file_size = (tmp_path / "huge_00.jpg").stat().st_size
    config = file_config(tmp_path, samples_buffer_size=2, max_buffer_bytes=1_000_000)
    with DatagoClient(config) as client:
        shapes = [sample.image.to_numpy().shape for sample in client]
        stats = client.stats
    assert shapes == [(3000, 4000, 3)] * 3
    # Alone: the one in hand, and the next one's estimate (encoded + decoded).
    assert BIG <= stats.peak_bytes_held <= 2 * BIG + file_size


def test_the_default_budget_follows_the_buffers_not_the_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAGO_MAX_TASKS", "4")
    big_jpegs(tmp_path, 10)
    file_size = (tmp_path / "huge_00.jpg").stat().st_size
    config = file_config(tmp_path, samples_buffer_size=2, prefetch_buffer_size=1)
    with DatagoClient(config) as client:
        assert client.get_sample() is not None
        time.sleep(1.5)  # four threads could decode every image meanwhile
        read = read_so_far(client, file_size)
        stats = client.stats
    # Default: samples_buffer_size + 1 samples (the one in hand included), not one a thread.
    assert read <= 2 + 1
    assert 2 * BIG <= stats.peak_bytes_held <= 3 * (BIG + file_size)


def test_one_big_image_per_thread_in_flight_however_large_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAGO_MAX_TASKS", "2")
    big_jpegs(tmp_path, 12)
    file_size = (tmp_path / "huge_00.jpg").stat().st_size
    config = file_config(tmp_path, samples_buffer_size=1, max_buffer_bytes=10**12)
    with DatagoClient(config) as client:
        assert client.get_sample() is not None
        time.sleep(1.5)  # two threads could decode every image meanwhile
        read = read_so_far(client, file_size)
    # Taken + 1 in the sink + 1 a thread (the window holds one big image per thread; 4
    # chunks per thread would allow 9 more).
    assert read <= 1 + 1 + 2


def test_small_images_still_go_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes: list[int] = []
    real = builder.build_chunk

    def counting(raws: list[RawSample], *args: Any) -> Any:
        sizes.append(len(raws))
        return real(raws, *args)

    monkeypatch.setattr("datago.dispatch.build_chunk", counting)
    monkeypatch.setenv("DATAGO_MAX_TASKS", "2")
    data = encode(photo(64, 48))
    for i in range(160):
        (tmp_path / f"{i:03d}.jpg").write_bytes(data)
    with DatagoClient(file_config(tmp_path, samples_buffer_size=64)) as client:
        count = sum(1 for _ in client)
    assert count == 160
    assert sizes[0] == 1  # before any file is read, its size is unknown: it goes alone
    assert max(sizes) == CHUNK_SIZE
    assert len(sizes) <= 160 // 2  # mostly full chunks


def test_webdataset_encoded_bytes_count_from_the_prefetch_queue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAGO_MAX_TASKS", "2")
    big_jpegs(tmp_path / "jpegs", 1)
    data = (tmp_path / "jpegs" / "huge_00.jpg").read_bytes()
    samples = [(f"s{i:02d}", {"jpg": data, "txt": b"caption"}) for i in range(16)]
    write_tar(tmp_path / "shard-000.tar", samples)
    budget = 5 * BIG // 2
    config = {
        "source_type": "webdataset",
        "source_config": {"url": str(tmp_path / "shard-000.tar")},
        "samples_buffer_size": 2,
        "prefetch_buffer_size": 64,  # 16 encoded samples would fit: the budget must stop them
        "max_buffer_bytes": budget,
    }
    held = []
    with DatagoClient(config) as client:
        ids = []
        for sample in client:
            assert sample.image.to_numpy().shape == (3000, 4000, 3)
            ids.append(sample.id)
            time.sleep(0.3)
            held.append(client.stats.bytes_held)
        stats = client.stats
    assert ids == [f"s{i:02d}" for i in range(16)]
    assert max(held) <= stats.peak_bytes_held <= budget
    assert stats.peak_bytes_held >= 2 * BIG
