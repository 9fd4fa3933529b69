"""The streaming tar parser against archives written by `tarfile` in every format."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from datago.sources import tar_stream
from datago.sources.tar_stream import (
    BLOCK,
    TarFormatError,
    TarMember,
    TarStreamParser,
    TruncatedTarError,
)
from tests.helpers import pax_member, raw_header, raw_member, raw_tar

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


def test_stream_ending_at_a_member_boundary_is_truncation() -> None:
    data = make_tar(FILES[:2], extras=False)
    parser = TarStreamParser()
    assert parser.feed(data[: 512 + 512]) == [TarMember(*FILES[0])]
    assert parser.pending_name is None
    with pytest.raises(TruncatedTarError, match=r"at byte 1024, .* before the end-of-archive"):
        parser.finish()
    assert not parser.ended


@pytest.mark.parametrize("mode", ["w", "w|", "w:gz"])
@pytest.mark.parametrize(
    "tar_format", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]
)
def test_tarfile_archives_end_with_the_end_block(mode: str, tar_format: int) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode, format=tar_format) as tar:  # type: ignore[call-overload]
        for name, data in FILES:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    data = buffer.getvalue()
    if mode == "w:gz":
        data = gzip.decompress(data)
    assert parse(data, 4096) == [TarMember(n, d) for n, d in FILES]  # `parse` checks `ended`


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar command")
@pytest.mark.parametrize("tar_format", ["gnu", "posix", "ustar"])
def test_archives_written_by_the_tar_command_end_with_the_end_block(
    tmp_path: Path, tar_format: str
) -> None:
    for name, data in FILES:
        (tmp_path / name).write_bytes(data)
    names = [name for name, _ in FILES]
    command = ["tar", f"--format={tar_format}", "-cf", "-", "-C", str(tmp_path), *names]
    data = subprocess.run(command, check=True, capture_output=True).stdout
    assert parse(data, 4096) == [TarMember(n, d) for n, d in FILES]


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


# -- hostile or broken archives -------------------------------------------------------------


@pytest.mark.parametrize(
    "size_field",
    [b"77777777777\x00", b"\x80" + (1 << 40).to_bytes(11, "big"), b"%011o\x00" % (1 << 30 | 1)],
)
def test_a_member_over_the_limit_fails_at_its_header_without_buffering(size_field: bytes) -> None:
    parser = TarStreamParser()
    data = raw_member(b"ok.txt", b"fine") + raw_header(b"huge.jpg", size_field=size_field)
    assert parser.feed(data) == [TarMember("ok.txt", b"fine")]
    assert parser._available == 0  # nothing of the member is waited for
    with pytest.raises(TarFormatError, match=r"'huge\.jpg' at byte 1024 claims .* over the limit"):
        parser.finish()


def test_a_member_at_the_limit_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tar_stream, "MAX_MEMBER_BYTES", 1000)
    assert parse(raw_tar(raw_member(b"a.bin", bytes(1000))), 4096) == [
        TarMember("a.bin", bytes(1000))
    ]
    with pytest.raises(TarFormatError, match="limit of 1000"):
        parse(raw_tar(raw_member(b"b.bin", bytes(1001))), 4096)


def test_a_size_beyond_the_end_of_the_stream_is_truncation() -> None:
    data = raw_member(b"a.txt", b"a") + raw_header(b"big.jpg", 10 << 20) + b"only this"
    parser = TarStreamParser()
    assert parser.feed(data) == [TarMember("a.txt", b"a")]
    assert parser.pending_name == "big.jpg"
    with pytest.raises(TruncatedTarError, match=r"big\.jpg"):
        parser.finish()


@pytest.mark.parametrize("kind", [b"x", b"L"])
def test_an_oversized_pax_or_long_name_header_is_a_format_error(kind: bytes) -> None:
    with pytest.raises(TarFormatError, match="over the limit of 1048576"):
        TarStreamParser().feed(raw_header(b"././@LongLink", 2 << 20, kind))


def test_pax_size_with_non_ascii_digits_is_ignored() -> None:
    record = " size=²\n".encode()
    record = b"%d" % (len(record) + 2) + record
    data = raw_tar(raw_member(b"p", record, b"x"), raw_member(b"a.txt", b"abc"))
    assert parse(data, 512) == [TarMember("a.txt", b"abc")]


def test_names_are_returned_as_stored_whatever_their_bytes() -> None:
    data = raw_tar(
        raw_member(b"bad\xff\xfe.jpg", b"1"),
        raw_member(b"../../etc/passwd", b"2"),
        pax_member(b"nul\x00inside.jpg", b"3"),
    )
    assert parse(data, 100) == [
        TarMember("bad\udcff\udcfe.jpg", b"1"),
        TarMember("../../etc/passwd", b"2"),
        TarMember("nul\x00inside.jpg", b"3"),
    ]


def test_an_empty_stream_is_not_an_empty_archive() -> None:
    parser = TarStreamParser()
    assert parser.feed(b"") == []
    with pytest.raises(TarFormatError, match="empty stream"):
        parser.finish()
    assert parse(bytes(2 * BLOCK), 512) == []  # an archive with no member is fine


def test_members_before_a_corrupt_header_in_the_same_chunk_are_kept() -> None:
    data = raw_member(b"a.txt", b"a") + raw_member(b"b.txt", b"b") + b"garbage!" * 64
    parser = TarStreamParser()
    assert parser.feed(data) == [TarMember("a.txt", b"a"), TarMember("b.txt", b"b")]
    assert parser.error is not None and parser.pending_name is None
    with pytest.raises(TarFormatError, match="checksum"):
        parser.feed(b"more")
    with pytest.raises(TarFormatError, match="checksum"):
        parser.finish()


def test_copy_bound_says_which_feeds_copy_members_out() -> None:
    data = make_tar([("big.bin", bytes(5000)), ("small.txt", b"s")], extras=False)
    parser = TarStreamParser()
    assert parser.copy_bound(511) == 0  # not even a header
    assert parser.copy_bound(512) == 512
    assert parser.feed(data[:600]) == []  # the header, and 88 bytes of 5120 queued
    assert parser.copy_bound(5000) == 0
    assert parser.copy_bound(5032) == 5120
    assert parser.feed(data[600:5632]) == [TarMember("big.bin", bytes(5000))]
    assert parser.feed(data[5632:]) == [TarMember("small.txt", b"s")]
    assert parser.ended and parser.copy_bound(1 << 20) == 0


@pytest.mark.parametrize("chunk_size", [1, 700, 1 << 20])
def test_each_member_knows_the_bytes_it_took_and_a_parser_can_start_there(
    chunk_size: int,
) -> None:
    pieces = [
        raw_member(b"a.jpg", b"x" * 600),
        pax_member(b"p" * 150 + b".jpg", b"pax"),  # its pax header is part of it
        raw_member(b"././@LongLink", b"l" * 120 + b".txt\x00", b"L")
        + raw_member(b"short", b"long"),
        raw_member(b"dir/", b"", b"5") + raw_member(b"z.txt", b"z"),  # a directory before z
    ]
    data = raw_tar(*pieces)
    members = parse(data, chunk_size)
    starts = [sum(map(len, pieces[:i])) for i in range(len(pieces))]
    starts[3] += BLOCK  # z's own header, after the directory entry (not a member)
    assert [(m.name, m.start, m.end) for m in members] == [
        ("a.jpg", starts[0], starts[1]),
        ("p" * 150 + ".jpg", starts[1], starts[2]),
        ("l" * 120 + ".txt", starts[2], starts[3] - BLOCK),
        ("z.txt", starts[3], len(data) - 2 * BLOCK),
    ]
    resumed = TarStreamParser(offset=members[1].start)
    assert resumed.feed(data[members[1].start :]) == members[1:]
    assert [m.start for m in resumed.feed(b"")] == [] and resumed.ended
    assert resumed.offset == len(data) - 2 * BLOCK + BLOCK  # the first end block was read
