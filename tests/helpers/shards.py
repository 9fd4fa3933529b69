"""Webdataset shards: typical samples, tar files written by `tarfile`, and raw tar by hand."""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile
from pathlib import Path

from datago.sources.tar_stream import BLOCK
from tests.helpers.images import small_jpeg

Members = dict[str, bytes]


def sample_members(index: int) -> Members:
    """A typical webdataset sample: a JPEG, JSON metadata, a caption and a class."""
    return {
        "jpg": small_jpeg(index),
        "json": json.dumps({"index": index, "tags": ["a", "b"]}).encode(),
        "txt": f"caption {index}".encode(),
        "cls": str(index % 7).encode(),
    }


def write_tar(
    path: Path, samples: list[tuple[str, Members]], tar_format: int = tarfile.USTAR_FORMAT
) -> Path:
    """A shard with members `<key>.<ext>` in the given order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tar_format) as tar:
        for key, members in samples:
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def write_shards(folder: Path, shards: int, per_shard: int) -> tuple[str, list[str]]:
    """`shards` shards `shard-000.tar`...; returns the brace pattern and every key in order."""
    keys = []
    for shard in range(shards):
        samples = []
        for i in range(per_shard):
            index = shard * per_shard + i
            key = f"s{index:04d}"
            samples.append((key, sample_members(index)))
            keys.append(key)
        write_tar(folder / f"shard-{shard:03d}.tar", samples)
    return str(folder / f"shard-{{000..{shards - 1:03d}}}.tar"), keys


def shard_files(folder: Path, shards: int, per_shard: int) -> tuple[dict[str, bytes], list[str]]:
    """`write_shards`, read back as {file name: bytes} (what a `Server.files` serves), and keys."""
    _, keys = write_shards(folder, shards, per_shard)
    files = {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.tar"))}
    return files, keys


def write_noisy_shards(
    folder: Path, shards: int, per_shard: int, gzipped: bool = False
) -> dict[str, bytes]:
    """Shards of samples `sNNNN`, each a JPEG and 24 KB of random bytes (`.tar.gz` when
    `gzipped`); returns them by file name."""
    noise = random.Random(0)
    suffix = ".tar.gz" if gzipped else ".tar"
    for shard in range(shards):
        samples = [
            (f"s{index:04d}", {"jpg": small_jpeg(index), "bin": noise.randbytes(24_000)})
            for index in range(shard * per_shard, (shard + 1) * per_shard)
        ]
        path = write_tar(folder / f"shard-{shard:03d}.tar", samples)
        if gzipped:
            path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
            path.unlink()
    return {p.name: p.read_bytes() for p in sorted(folder.glob(f"shard-*{suffix}"))}


def sample_spans(data: bytes) -> dict[str, tuple[int, int]]:
    """Each sample's tar bytes [first header, end of its last member's data)."""
    spans: dict[str, tuple[int, int]] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for info in tar:
            key = info.name.split(".")[0]
            end = info.offset_data + -(-info.size // 512) * 512
            spans[key] = (spans.get(key, (info.offset, 0))[0], end)
    return spans


def raw_header(name: bytes, size: int = 0, kind: bytes = b"0", size_field: bytes = b"") -> bytes:
    """A ustar header written by hand, so that any name bytes and size field can go in."""
    header = bytearray(BLOCK)
    header[0 : min(len(name), 100)] = name[:100]
    header[100:124] = b"0000644\x000000000\x000000000\x00"
    header[124:136] = size_field or b"%011o\x00" % size
    header[136:148] = b"00000000000\x00"
    header[156:157] = kind
    header[257:265] = b"ustar\x0000"
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\x00 " % sum(header)
    return bytes(header)


def raw_member(name: bytes, data: bytes, kind: bytes = b"0") -> bytes:
    """A hand-written member: its header, then `data` padded to the block size."""
    return raw_header(name, len(data), kind) + data + bytes(-len(data) % BLOCK)


def pax_member(path: bytes, data: bytes) -> bytes:
    """A pax `path` record (any bytes, NUL included), then the member it names."""
    record = b" path=" + path + b"\n"
    length = len(record) + len(str(len(record)))
    length += len(str(length)) - len(str(len(record)))
    return raw_member(b"././@PaxHeader", b"%d" % length + record, b"x") + raw_member(b"x", data)


def raw_tar(*members: bytes) -> bytes:
    """Hand-written members, then the two zero blocks that end an archive."""
    return b"".join(members) + bytes(2 * BLOCK)
