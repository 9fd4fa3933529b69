"""What a pass holds in memory: decoded samples are bounded by the sink and the window."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from datago import DatagoClient
from datago.engine import CHUNK_SIZE, WINDOW_PER_THREAD
from tests.helpers import encode, file_config, photo


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
