"""Gzipped shards: inflation by content, in chunks of any size, with faults detected."""

from __future__ import annotations

import gzip
import os

import pytest

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
