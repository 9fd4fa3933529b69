"""The webdataset source on local tar shards: grouping, coverage, splits, shuffle, faults."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import random
import tarfile
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import pytest

from datago.config import Environment
from datago.errors import SourceError
from datago.sources import wds_groups
from datago.sources.base import Partition, RawSample, SourceContext
from datago.sources.tar_stream import TarMember
from datago.stats import Stats
from datago.storage import local
from tests.helpers import (
    collect_wds,
    iter_webdataset,
    pax_member,
    raw_member,
    raw_tar,
    sample_members,
    small_jpeg,
    small_png,
    wds_source,
    write_shards,
    write_tar,
)


def cut_inside(shard: Path, member: str, offset: int) -> None:
    """Truncate `shard` `offset` bytes into `member`'s data (negative: into its header)."""
    with tarfile.open(shard) as tar:
        start = tar.getmember(member).offset_data
    shard.write_bytes(shard.read_bytes()[: start + offset])


async def test_every_sample_once_in_shard_order_with_its_members(tmp_path: Path) -> None:
    pattern, keys = write_shards(tmp_path, 3, 5)
    samples, stats = await collect_wds(wds_source(pattern))
    assert [s.id for s in samples] == keys
    for index, sample in enumerate(samples):
        members = sample_members(index)
        assert sample.image == members["jpg"]
        assert sample.source == str(tmp_path / f"shard-{index // 5:03d}.tar")
        assert sample.attributes_dict == {  # raw text per member, as the Rust wheel
            "json": members["json"].decode(),
            "txt": f"caption {index}",
            "cls": str(index % 7),
        }
        assert sample.masks == {} and sample.additional_images == {}
        assert sample.duplicate_state == 0
    assert (stats.skipped, stats.source_errors) == (0, 0)


async def test_url_list_and_file_scheme(tmp_path: Path) -> None:
    _, keys = write_shards(tmp_path, 4, 2)
    urls = [
        str(tmp_path / "shard-{000,001}.tar"),
        f"file://{tmp_path}/shard-002.tar",
        f"FILE://{tmp_path}/shard-003.tar",  # schemes are case-insensitive
    ]
    samples, _ = await collect_wds(wds_source(urls))
    assert [s.id for s in samples] == keys


async def test_concurrent_downloads_deliver_everything_once(tmp_path: Path) -> None:
    pattern, keys = write_shards(tmp_path, 7, 6)
    samples, _ = await collect_wds(wds_source(pattern, concurrent_downloads=3))
    assert sorted(s.id for s in samples) == keys


async def test_grouping_rules_images_masks_and_keys(tmp_path: Path) -> None:
    shard = write_tar(
        tmp_path / "mixed.tar",
        [
            (
                "dir/s0007",
                {
                    "png": small_png(1),
                    "JPG": small_jpeg(7),
                    "seg.png": small_png(2),
                    "mask.png": small_png(3),
                },
            ),
            ("s0008", {"seg.png": small_png(4), "webp": b"webp bytes", "txt": "é".encode()}),
            ("s0009", {"mask.png": small_png(5), "cls": b"3"}),  # a mask alone is no image
            ("s0010", {"jpeg": small_jpeg(10), "extra.json": b'["x"]', "cls": b"not a number"}),
            ("s0011", {"jpg": small_jpeg(11), "npy": b"\x93NUMPY\xff\xfe", "json": b"[1, 2]"}),
            ("s0012", {"jpg": small_jpeg(12), "cls": b"3\xff\n", "bin": b"\xff"}),
        ],
    )
    samples, stats = await collect_wds(wds_source(str(shard)))
    by_id = {s.id: s for s in samples}
    assert list(by_id) == ["dir/s0007", "s0008", "s0010", "s0011", "s0012"]
    first = by_id["dir/s0007"]
    assert first.image == small_jpeg(
        7
    )  # `.JPG` is the reference jpg: extensions are case-insensitive
    assert first.additional_images == {"png": small_png(1), "seg.png": small_png(2)}
    assert first.masks == {"mask.png": small_png(3)}
    second = by_id["s0008"]  # no reference image: the first image in tar order is the main one
    assert second.image == small_png(4)
    assert second.additional_images == {"webp": b"webp bytes"}
    assert second.attributes_dict == {"txt": "é"}
    assert by_id["s0010"].image == small_jpeg(10)  # jpeg stands for jpg
    assert by_id["s0010"].attributes_dict == {"extra.json": '["x"]', "cls": "not a number"}
    assert by_id["s0011"].attributes_dict == {"json": "[1, 2]"}  # binary npy ignored
    # cls, json and txt are read as the wheel reads them (invalid UTF-8 replaced); other
    # binary members are ignored
    assert by_id["s0012"].attributes_dict == {"cls": "3\ufffd\n"}
    assert stats.skipped == 1
    assert stats.skip_reasons == {"no image": 1}


async def test_reference_image_type_picks_the_main_image(tmp_path: Path) -> None:
    shard = write_tar(tmp_path / "a.tar", [("k", {"jpg": small_jpeg(1), "png": small_png(2)})])
    samples, _ = await collect_wds(wds_source(str(shard), reference_image_type="PNG"))
    assert samples[0].image == small_png(2)
    assert samples[0].additional_images == {"jpg": small_jpeg(1)}


async def test_repeated_extension_starts_a_new_sample(tmp_path: Path) -> None:
    shard = tmp_path / "dup.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in [
            ("k.jpg", small_jpeg(1)),
            ("k.jpg", small_jpeg(2)),
            ("nodot", b"x"),
            ("k.txt", b"t"),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    samples, _ = await collect_wds(wds_source(str(shard)))
    assert [(s.id, s.image, s.attributes_dict) for s in samples] == [
        ("k", small_jpeg(1), {}),
        ("k", small_jpeg(2), {"txt": "t"}),
    ]


async def test_invalid_json_is_kept_as_text_as_the_wheel_keeps_it(tmp_path: Path) -> None:
    shard = write_tar(
        tmp_path / "j.tar",
        [
            ("a", {"jpg": small_jpeg(1), "json": b"{broken"}),
            ("b", {"jpg": small_jpeg(2), "json": b"{}"}),
        ],
    )
    samples, stats = await collect_wds(wds_source(str(shard)))
    assert [(s.id, s.attributes_dict) for s in samples] == [
        ("a", {"json": "{broken"}),
        ("b", {"json": "{}"}),
    ]
    assert stats.skipped == 0


async def test_long_names_in_gnu_and_pax_shards(tmp_path: Path) -> None:
    key = "a-long-directory-name/" * 6 + "sample"
    for tar_format in (tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        shard = write_tar(tmp_path / f"{tar_format}.tar", [(key, sample_members(0))], tar_format)
        samples, _ = await collect_wds(wds_source(str(shard)))
        assert [s.id for s in samples] == [key]
        assert samples[0].image == small_jpeg(0)


@pytest.mark.parametrize(("world_size", "workers"), [(1, 1), (2, 1), (3, 2), (2, 4), (4, 3)])
async def test_rank_by_worker_parts_are_disjoint_and_complete(
    tmp_path: Path, world_size: int, workers: int
) -> None:
    pattern, keys = write_shards(tmp_path, 5, 4)  # (4, 3) and (2, 4): fewer shards than parts
    seen: list[str] = []
    for rank in range(world_size):
        for worker in range(workers):
            source = wds_source(pattern, rank=rank, world_size=world_size)
            samples, _ = await collect_wds(source, Partition(worker, workers))
            assert samples, (rank, worker)
            seen += [s.id for s in samples]
    assert sorted(seen) == keys  # sorted equality: no duplicate, none missing


async def test_fewer_shards_than_parts_each_part_gets_a_share(tmp_path: Path) -> None:
    pattern, keys = write_shards(tmp_path, 1, 10)
    parts = []
    for rank in range(3):
        samples, stats = await collect_wds(wds_source(pattern, rank=rank, world_size=3))
        parts.append([s.id for s in samples])
        assert stats.skipped == 0
    assert parts == [keys[0::3], keys[1::3], keys[2::3]]


async def test_seeded_shuffle_is_reproducible_and_complete(tmp_path: Path) -> None:
    pattern, keys = write_shards(tmp_path, 6, 8)

    async def order(seed: int | None, epoch: int = 0) -> list[str]:
        source = wds_source(pattern, random_sampling=True, seed=seed, shuffle_buffer_size=10)
        samples, _ = await collect_wds(source, epoch=epoch)
        return [s.id for s in samples]

    first = await order(7)
    assert sorted(first) == keys and first != keys
    assert await order(7) == first
    assert await order(8) != first
    assert await order(7, epoch=1) != first
    assert sorted(await order(None)) == keys


async def test_seeded_shuffle_keeps_parts_disjoint(tmp_path: Path) -> None:
    pattern, keys = write_shards(tmp_path, 6, 3)
    seen: list[str] = []
    for rank in range(4):
        source = wds_source(pattern, random_sampling=True, seed=3, rank=rank, world_size=4)
        samples, _ = await collect_wds(source)
        seen += [s.id for s in samples]
    assert sorted(seen) == keys


@pytest.mark.parametrize(
    ("member", "offset", "partial", "reason"),
    [
        ("s0003.jpg", 100, "s0003", "inside member 's0003.jpg'"),
        # Cut inside s0003's first header, nothing says s0002 was complete: it is the one dropped.
        ("s0003.jpg", -412, "s0002", "inside a header"),
        # Cut between two members (no end-of-archive block): s0003 lacks its json, txt, cls.
        ("s0003.json", -512, "s0003", "before the end-of-archive block"),
        ("s0003.jpg", -512, "s0002", "before the end-of-archive block"),
    ],
)
async def test_truncated_shard_keeps_complete_samples(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    member: str,
    offset: int,
    partial: str,
    reason: str,
) -> None:
    pattern, keys = write_shards(tmp_path, 2, 6)
    cut_inside(tmp_path / "shard-000.tar", member, offset)
    samples, stats = await collect_wds(wds_source(pattern))
    assert [s.id for s in samples] == keys[: keys.index(partial)] + keys[6:]
    assert all(s.attributes_dict["txt"] == f"caption {int(s.id[1:])}" for s in samples)
    assert stats.source_errors == 1
    assert stats.skipped == 1
    assert stats.skip_reasons == {"shard fault": 1}
    (logged,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "shard-000.tar" in logged and reason in logged


async def test_missing_shard_is_counted_and_the_others_go_on(tmp_path: Path) -> None:
    pattern, keys = write_shards(tmp_path, 3, 2)
    (tmp_path / "shard-001.tar").unlink()
    samples, stats = await collect_wds(wds_source(pattern))
    assert [s.id for s in samples] == keys[:2] + keys[4:]
    assert stats.source_errors == 1


async def test_all_shards_failing_raises_source_error(tmp_path: Path) -> None:
    (tmp_path / "bad.tar").write_bytes(b"<html>error page</html>" * 100)
    source = wds_source([str(tmp_path / "missing-{0..2}.tar"), str(tmp_path / "bad.tar")])
    with pytest.raises(SourceError, match="all 4 webdataset shard"):
        await collect_wds(source)


@pytest.mark.parametrize("random_sampling", [False, True])
async def test_all_shards_truncated_delivers_what_it_can_then_raises(
    tmp_path: Path, random_sampling: bool
) -> None:
    pattern, keys = write_shards(tmp_path, 2, 5)
    cut_inside(tmp_path / "shard-000.tar", "s0004.jpg", 100)
    cut_inside(tmp_path / "shard-001.tar", "s0009.jpg", 100)
    source = wds_source(pattern, random_sampling=random_sampling, seed=1)
    stats = Stats()
    ids: list[str] = []
    with ThreadPoolExecutor(2) as executor:
        ctx = SourceContext(environment=Environment(), executor=executor, stats=stats)
        with pytest.raises(SourceError, match="all 2 webdataset shard"):
            async with asyncio.timeout(20):
                async for sample in iter_webdataset(source, ctx):
                    ids.append(sample.id)  # noqa: PERF401 - a comprehension would lose them
    assert sorted(ids) == [k for k in keys if k not in ("s0004", "s0009")]
    assert (stats.source_errors, stats.skipped) == (2, 2)


async def test_parts_sharing_a_shard_agree_on_sample_boundaries(tmp_path: Path) -> None:
    shard = tmp_path / "repeats.tar"
    names = ["a.jpg", "a.jpg", "a.txt", "b.jpg", "b.jpg", "b.jpg", "c.jpg"]
    with tarfile.open(shard, "w") as tar:
        for index, name in enumerate(names):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(bytes([index])))
    parts = []
    for rank in range(2):
        samples, _ = await collect_wds(wds_source(str(shard), rank=rank, world_size=2))
        parts.append([(s.id, s.image) for s in samples])
    assert parts == [
        [("a", b"\x00"), ("b", b"\x03"), ("b", b"\x05")],
        [("a", b"\x01"), ("b", b"\x04"), ("c", b"\x06")],
    ]


async def test_gzipped_shards_are_read_and_a_cut_one_is_counted(tmp_path: Path) -> None:
    pattern, keys = write_shards(tmp_path, 3, 4)
    for index in range(3):
        shard = tmp_path / f"shard-{index:03d}.tar"
        packed = gzip.compress(shard.read_bytes())
        if index == 1:
            packed = packed[: len(packed) * 2 // 3]
        shard.with_suffix(".tgz").write_bytes(packed)
    samples, stats = await collect_wds(wds_source(pattern.replace(".tar", ".tgz")))
    ids = [s.id for s in samples]
    assert ids[:4] == keys[:4] and ids[-4:] == keys[8:]
    assert set(ids[4:-4]) < set(keys[4:8])
    assert samples[0].image == small_jpeg(0)
    assert stats.source_errors == 1


async def test_cancelled_while_opening_a_shard_leaves_no_file_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pattern, _ = write_shards(tmp_path, 1, 2)
    opened: list[BinaryIO] = []

    def slow_open(path: str, start: int) -> BinaryIO:
        time.sleep(0.2)
        opened.append(open(path, "rb"))  # noqa: SIM115 - the source must close it
        return opened[-1]

    monkeypatch.setattr(local, "_open", slow_open)
    with ThreadPoolExecutor(2) as executor:
        ctx = SourceContext(environment=Environment(), executor=executor, stats=Stats())
        task = asyncio.create_task(collect_from(iter_webdataset(wds_source(pattern), ctx)))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(opened) == 1 and opened[0].closed


async def collect_from(stream: AsyncGenerator[RawSample, None]) -> list[RawSample]:
    async with contextlib.aclosing(stream):
        return [sample async for sample in stream]


async def test_bad_member_names_make_counted_skips(tmp_path: Path) -> None:
    shard = tmp_path / "names.tar"
    shard.write_bytes(
        raw_tar(
            raw_member(b"a.jpg", small_jpeg(1)),
            raw_member(b"../../etc/passwd", b"root:x:0:0"),  # no extension: still counted
            raw_member(b"../../evil.jpg", small_jpeg(2)),
            raw_member(b"/abs/olute.jpg", small_jpeg(3)),
            raw_member(b"b.jpg", small_jpeg(4)),
            raw_member(b"bad\xff.jpg", small_jpeg(5)),  # not UTF-8
            raw_member(b"bad\xff.txt", b"caption"),  # the same sample: one skip
            pax_member(b"nul\x00.jpg", small_jpeg(6)),
            pax_member(b"n" * 5000 + b".jpg", small_jpeg(7)),
            raw_member(b"./c.jpg", small_jpeg(8)),  # `./` as written by `tar -C dir .`: fine
        )
    )
    samples, stats = await collect_wds(wds_source(str(shard)))
    assert [(s.id, s.image) for s in samples] == [
        ("a", small_jpeg(1)),
        ("b", small_jpeg(4)),
        ("./c", small_jpeg(8)),
    ]
    assert stats.skipped == 6
    assert stats.skip_reasons == {"bad member name": 6}
    assert stats.source_errors == 0


async def test_parts_sharing_a_shard_count_bad_names_as_groups(tmp_path: Path) -> None:
    shard = tmp_path / "shared.tar"
    names = [b"a.jpg", b"../b.jpg", b"c.jpg", b"d.jpg"]
    shard.write_bytes(raw_tar(*(raw_member(n, bytes([i])) for i, n in enumerate(names))))
    parts = []
    for rank in range(2):
        samples, stats = await collect_wds(wds_source(str(shard), rank=rank, world_size=2))
        parts.append(([s.id for s in samples], stats.skipped))
    assert parts == [(["a", "c"], 0), (["d"], 1)]


async def test_a_gzipped_shard_read_byte_by_byte_ends_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tar's end block comes before gzip's trailer: the source stops reading there.
    monkeypatch.setattr(local, "CHUNK_BYTES", 7)
    _, keys = write_shards(tmp_path, 1, 3)
    shard = tmp_path / "shard-000.tar"
    (tmp_path / "shard.tgz").write_bytes(gzip.compress(shard.read_bytes()))
    samples, stats = await collect_wds(wds_source(str(tmp_path / "shard.tgz")))
    assert [s.id for s in samples] == keys
    assert (stats.source_errors, stats.skipped) == (0, 0)


async def test_a_corrupt_header_keeps_the_samples_read_before_it(tmp_path: Path) -> None:
    shard = tmp_path / "corrupt.tar"
    members = [raw_member(f"k{i}.jpg".encode(), small_jpeg(i)) for i in range(4)]
    shard.write_bytes(b"".join(members) + b"\x01" * 512 + raw_member(b"k9.jpg", small_jpeg(9)))
    good = write_tar(tmp_path / "good.tar", [("g", sample_members(0))])
    samples, stats = await collect_wds(wds_source([str(shard), str(good)]))
    # k3 is whole, but only the next member's header could tell: it is a counted skip
    assert [s.id for s in samples] == ["k0", "k1", "k2", "g"]
    assert (stats.source_errors, stats.skip_reasons) == (1, {"shard fault": 1})


async def test_the_order_does_not_depend_on_download_timing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pattern, keys = write_shards(tmp_path, 7, 4)
    delays = random.Random(0)

    def slow_read(file: BinaryIO) -> bytes:
        time.sleep(delays.uniform(0, 0.01))  # each shard's reads finish at random times
        return read(file)

    read = local._read_chunk
    monkeypatch.setattr(local, "_read_chunk", slow_read)
    monkeypatch.setattr(local, "CHUNK_BYTES", 3000)  # several reads per shard
    shards = [keys[i : i + 4] for i in range(0, len(keys), 4)]
    slots = [[k for shard in shards[slot::3] for k in shard] for slot in range(3)]  # j, j+3, j+6
    expected = [slot[i] for i in range(max(map(len, slots))) for slot in slots if i < len(slot)]
    for _ in range(3):
        samples, _ = await collect_wds(wds_source(pattern, concurrent_downloads=3))
        assert [s.id for s in samples] == expected
    shuffled = wds_source(pattern, concurrent_downloads=3, random_sampling=True, seed=4)
    orders = [[s.id for s in (await collect_wds(shuffled))[0]] for _ in range(3)]
    assert orders[0] == orders[1] == orders[2] != keys


async def test_dotted_names_make_an_oversized_sample_a_counted_skip(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    count = wds_groups.MAX_GROUP_MEMBERS + 10  # img.0000.jpg, img.0001.jpg: one key, "img"
    dotted = [raw_member(f"img.{i:04d}.jpg".encode(), bytes([i % 256])) for i in range(count)]
    shard = tmp_path / "dotted.tar"
    shard.write_bytes(
        raw_tar(raw_member(b"a.jpg", small_jpeg(1)), *dotted, raw_member(b"b.jpg", small_jpeg(2)))
    )
    samples, stats = await collect_wds(wds_source(str(shard)))
    assert [(s.id, s.image) for s in samples] == [("a", small_jpeg(1)), ("b", small_jpeg(2))]
    assert (stats.skipped, stats.skip_reasons, stats.source_errors) == (
        1,
        {"oversized sample": 1},
        0,
    )
    assert any(
        "'img'" in r.getMessage() and "over 1024 members" in r.getMessage() for r in caplog.records
    )


def test_an_oversized_group_stops_holding_its_members(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wds_groups, "MAX_GROUP_BYTES", 1000)
    stats = Stats()
    grouper = wds_groups.SampleGrouper("shard", "jpg", stats)
    assert grouper.add(TarMember("k.jpg", bytes(600))) is None
    assert grouper.add(TarMember("k.txt", bytes(600))) is None  # 1200 bytes: over the cap
    assert (grouper.members, grouper.size) == ({}, 0)
    assert grouper.add(TarMember("k.jpg", bytes(600))) is None  # a repeat: still the same group
    assert grouper.members == {}
    done = grouper.add(TarMember("next.jpg", b"x"))
    assert done is None and grouper.key == "next" and grouper.groups == 1
    assert grouper.flush() is not None and grouper.flush() is None
    assert stats.skip_reasons == {"oversized sample": 1}
