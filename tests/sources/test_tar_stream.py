"""The streaming tar parser against archives written by `tarfile` in every format."""

from __future__ import annotations

import io
import tarfile

import pytest

from datago.sources.tar_stream import (
    TarFormatError,
    TarMember,
    TarStreamParser,
    TruncatedTarError,
)

LONG_DIR = "a-directory-name-long-enough/" * 5  # 145 characters: too long for a v7 name field
FILES = [
    ("s0000.jpg", b"\xff\xd8jpeg bytes" * 40),
    ("s0000.txt", b"a caption"),
    ("s0001.json", b'{"label": 1}'),
    ("empty.txt", b""),
    ("exact.bin", bytes(range(256)) * 2),  # exactly one block
]


def make_tar(
    files: list[tuple[str, bytes]], tar_format: int = tarfile.USTAR_FORMAT, extras: bool = True
) -> bytes:
    """An archive of `files`, plus a directory and a symlink (which the parser must skip)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tar_format) as tar:
        if extras:
            directory = tarfile.TarInfo("somedir")
            directory.type = tarfile.DIRTYPE
            tar.addfile(directory)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if extras:
            link = tarfile.TarInfo("link.jpg")
            link.type = tarfile.SYMTYPE
            link.linkname = "s0000.jpg"
            tar.addfile(link)
    return buffer.getvalue()


def parse(data: bytes, chunk_size: int) -> list[TarMember]:
    parser = TarStreamParser()
    members = []
    for start in range(0, len(data), chunk_size):
        members += parser.feed(data[start : start + chunk_size])
    parser.finish()
    assert parser.ended
    return members


@pytest.mark.parametrize("chunk_size", [1, 511, 512, 513, 4096, 1 << 20])
def test_ustar_members_whatever_the_chunk_size(chunk_size: int) -> None:
    assert parse(make_tar(FILES), chunk_size) == [TarMember(n, d) for n, d in FILES]


def test_every_split_position_gives_the_same_members() -> None:
    data = make_tar(FILES[:3])
    expected = [TarMember(n, d) for n, d in FILES[:3]]
    for split in range(len(data) + 1):
        parser = TarStreamParser()
        members = parser.feed(data[:split]) + parser.feed(data[split:])
        parser.finish()
        assert members == expected, split


@pytest.mark.parametrize(
    ("tar_format", "name"),
    [
        (tarfile.GNU_FORMAT, LONG_DIR + "s0002.jpg"),  # ././@LongLink header
        (tarfile.PAX_FORMAT, LONG_DIR + "s0002.jpg"),  # pax `path` record
        (tarfile.PAX_FORMAT, "dir/été-s0002.jpg"),  # pax for a non-ASCII name
        (tarfile.USTAR_FORMAT, LONG_DIR + "s0002.jpg"),  # ustar prefix field
    ],
)
def test_long_and_unicode_names(tar_format: int, name: str) -> None:
    files = [("s0001.txt", b"before"), (name, b"long name data" * 100), ("s0003.txt", b"after")]
    data = make_tar(files, tar_format)
    assert parse(data, 700) == [TarMember(n, d) for n, d in files]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert [m.name for m in tar.getmembers() if m.isreg()] == [n for n, _ in files]


def test_directories_links_and_zero_size_members() -> None:
    members = parse(make_tar([("a.txt", b""), ("b.txt", b"x")]), 512)
    assert members == [TarMember("a.txt", b""), TarMember("b.txt", b"x")]


def test_truncated_inside_a_member_names_it() -> None:
    data = make_tar(FILES, extras=False)
    parser = TarStreamParser()
    members = parser.feed(data[: 512 + 100])  # the first header and part of its data
    assert members == []
    assert parser.pending_name == "s0000.jpg"
    with pytest.raises(TruncatedTarError, match=r"s0000\.jpg"):
        parser.finish()


def test_truncated_inside_a_header() -> None:
    data = make_tar(FILES, extras=False)
    parser = TarStreamParser()
    members = parser.feed(data[: 512 + 512 + 200])  # first member whole, 200 bytes of a header
    assert members == [TarMember(*FILES[0])]
    assert parser.pending_name is None
    assert parser.offset == 512 + 512
    with pytest.raises(TruncatedTarError, match="header"):
        parser.finish()


def test_stream_ending_at_a_member_boundary_is_accepted() -> None:
    data = make_tar(FILES[:1], extras=False)
    parser = TarStreamParser()
    assert parser.feed(data[: 512 + 512]) == [TarMember(*FILES[0])]
    parser.finish()
    assert not parser.ended


def test_bytes_after_the_end_of_archive_are_ignored() -> None:
    data = make_tar(FILES[:2], extras=False)
    parser = TarStreamParser()
    members = parser.feed(data + b"garbage" * 1000)
    assert members == [TarMember(n, d) for n, d in FILES[:2]]
    assert parser.ended
    assert parser.feed(b"more garbage") == []
    parser.finish()


def test_garbage_is_a_format_error() -> None:
    parser = TarStreamParser()
    with pytest.raises(TarFormatError, match="checksum"):
        parser.feed(b"<html>not a tar</html>" * 100)


def test_corrupt_size_field_is_a_format_error() -> None:
    data = bytearray(make_tar(FILES[:1], extras=False))
    data[124:136] = b"zzzzzzzzzzz\x00"
    data[148:156] = b"%06o\x00 " % (sum(data[:148]) + sum(data[156:512]) + 256)
    with pytest.raises(TarFormatError, match="size"):
        TarStreamParser().feed(bytes(data))


def test_a_fed_bytearray_may_be_reused_by_the_caller() -> None:
    data = make_tar(FILES[:2], extras=False)
    parser = TarStreamParser()
    scratch = bytearray(data[:700])
    members = parser.feed(scratch)
    scratch[:] = bytes(len(scratch))  # the caller overwrites its buffer
    members += parser.feed(memoryview(data)[700:])
    assert members == [TarMember(n, d) for n, d in FILES[:2]]
