"""Gzipped shards: inflation by content, in chunks of any size, with faults detected."""

from __future__ import annotations

import gzip
import os

import pytest

from datago.sources import gzip_stream
from datago.sources.gzip_stream import GzipStreamInflater
from datago.sources.tar_stream import TarFormatError, TruncatedTarError

PLAIN = os.urandom(5000) + bytes(3000) + b"tail"


def inflate(data: bytes, chunk_size: int) -> bytes:
    inflater = GzipStreamInflater()
    out = b"".join(inflater.feed(data[i : i + chunk_size]) for i in range(0, len(data), chunk_size))
    inflater.finish()
    return out


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 511, 4096, 1 << 20])
def test_plain_streams_pass_through_and_gzip_is_inflated(chunk_size: int) -> None:
    assert inflate(PLAIN, chunk_size) == PLAIN
    assert inflate(gzip.compress(PLAIN), chunk_size) == PLAIN


@pytest.mark.parametrize("chunk_size", [1, 700, 1 << 20])
def test_concatenated_members_and_zero_padding(chunk_size: int) -> None:
    data = gzip.compress(PLAIN[:4000]) + gzip.compress(PLAIN[4000:]) + bytes(1000)
    assert inflate(data, chunk_size) == PLAIN


def test_a_cut_gzip_stream_is_truncated() -> None:
    data = gzip.compress(PLAIN)
    inflater = GzipStreamInflater()
    partial = inflater.feed(data[: len(data) // 2])
    assert PLAIN.startswith(partial)
    with pytest.raises(TruncatedTarError, match="gzip"):
        inflater.finish()


def test_corrupt_gzip_is_a_format_error() -> None:
    data = bytearray(gzip.compress(PLAIN))
    data[20:40] = bytes(range(20))
    with pytest.raises(TarFormatError, match="gzip"):
        inflate(bytes(data), 4096)


def test_a_gzip_bomb_stops_at_the_inflation_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gzip_stream, "MAX_INFLATED_PER_CHUNK", 1 << 20)
    bomb = gzip.compress(bytes(64 << 20))  # 64 MiB of zeros in ~64 KB
    inflater = GzipStreamInflater()
    with pytest.raises(TarFormatError, match="gzip bomb"):
        inflater.feed(bomb)
    exact = GzipStreamInflater()  # up to the bound, in any number of members, is fine
    assert exact.feed(gzip.compress(bytes(1 << 19)) * 2) == bytes(1 << 20)
    exact.finish()


def test_the_bound_is_per_fed_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gzip_stream, "MAX_INFLATED_PER_CHUNK", 1 << 20)
    data = gzip.compress(os.urandom(3 << 20))
    assert inflate(data, 1 << 19) == gzip.decompress(data)


def test_a_one_byte_stream_is_not_an_archive() -> None:
    inflater = GzipStreamInflater()
    assert inflater.feed(b"\x1f") == b""
    with pytest.raises(TarFormatError, match="1 byte"):
        inflater.finish()
