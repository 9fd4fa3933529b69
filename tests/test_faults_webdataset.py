"""Webdataset faults end to end through `DatagoClient`: a loopback server that misbehaves.

`Chaos` breaks ~10 % of a loopback `Server`'s requests: a 5xx status, a connection reset
(RST), a body that stalls past the (lowered) stall timeout, or a body cut short. The fault
of a request is drawn from an rng seeded with (seed, shard, attempt), so a run is the same
whatever the download timing; a request after a fault never faults, so retries (Range
resumes) always recover. Every good sample must come exactly once, in the order of a clean
run, with its own content.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datago import DatagoClient
from datago.config import Environment
from datago.sources import gzip_stream
from tests.helpers import (
    Fault,
    Logged,
    Server,
    ids_of,
    pax_member,
    raw_header,
    raw_member,
    raw_tar,
    sample_members,
    write_tar,
)

SHARDS, PER_SHARD = 20, 8
FAULTS = ("status", "reset", "stall", "truncate")
CORRUPT = {"s0013", "s0101"}  # JPEGs that do not decode: counted skips


def fast() -> Environment:
    """Quick retries; a stalled download fails after 0.5 s (the defaults: 0.1 s and 60 s)."""
    return replace(Environment.from_env(), backoff_base_s=0.01, stall_timeout_s=0.5)


@dataclass
class Chaos:
    """A fault rule: a seeded fault for ~`rate` of the requests, never twice in a row per shard."""

    files: dict[str, bytes]
    rate: float = 0.1
    seed: int = 0
    always_500: set[str] = field(default_factory=set)
    faults: Counter[str] = field(default_factory=Counter)
    faulted: set[str] = field(default_factory=set)
    """Shards whose last request faulted: their next one is served cleanly."""

    def __call__(self, seen: Logged) -> Fault | None:
        name = seen.name
        if name in self.always_500:
            return Fault.error(500)
        rng = random.Random(f"{self.seed}:{name}:{seen.attempt + 1}")
        fault = None
        if name not in self.faulted and rng.random() < self.rate:
            fault = rng.choice(FAULTS)
            self.faults[fault] += 1
            self.faulted.add(name)
        else:
            self.faulted.discard(name)
        if fault is None:
            return None
        if fault == "status":
            return Fault.error(rng.choice([500, 502, 503]))
        if fault == "reset":
            return Fault.reset(rst=True)  # an RST, not a FIN
        # Cut in the first half, before the archive's end: then a retry is always needed.
        at = rng.randrange((len(self.files[name]) - seen.range_start) // 2)
        return Fault.stall(at) if fault == "stall" else Fault.cut(at)  # stall: until given up


def write_dataset(folder: Path) -> tuple[dict[str, bytes], list[str]]:
    """The shards by name, and the keys of their good samples in shard order."""
    keys = []
    for shard in range(SHARDS):
        samples = []
        for index in range(shard * PER_SHARD, (shard + 1) * PER_SHARD):
            key, members = f"s{index:04d}", sample_members(index)
            if key in CORRUPT:
                members["jpg"] = b"\xff\xd8\xff\xe0 corrupt"
            samples.append((key, members))
            keys.append(key)
        write_tar(folder / f"shard-{shard:03d}.tar", samples)
    files = {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*.tar"))}
    return files, [key for key in keys if key not in CORRUPT]


def contents(files: dict[str, bytes]) -> dict[str, dict[str, bytes]]:
    """Every sample's members, read back with `tarfile` (not our parser)."""
    samples: dict[str, dict[str, bytes]] = {}
    for data in files.values():
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            for info in tar:
                key, _, extension = info.name.partition(".")
                file = tar.extractfile(info)
                assert file is not None
                samples.setdefault(key, {})[extension] = file.read()
    return samples


def client_config(url: str | list[str], **source: Any) -> dict[str, Any]:
    return {
        "source_type": "webdataset",
        "source_config": {"url": url, **source},
        "samples_buffer_size": 8,
    }


def read_all(config: dict[str, Any]) -> tuple[list[Any], Any]:
    with DatagoClient(config, environment=fast()) as client:
        samples = list(client)
        return samples, client.stats


def check_contents(samples: list[Any], files: dict[str, bytes]) -> None:
    """Each delivered sample carries its own members, byte for byte where undecoded."""
    originals = contents(files)
    for sample in samples:
        members = originals[sample.id]
        assert sample.attributes_dict["txt"] == members["txt"].decode()
        assert json.loads(sample.attributes_dict["json"])["index"] == int(sample.id[1:])
        with Image.open(io.BytesIO(members["jpg"])) as image:
            expected = np.asarray(image.convert("RGB"))
        np.testing.assert_array_equal(sample.image.to_numpy(), expected)


@pytest.mark.parametrize(("downloads", "seed"), [(1, 15), (4, 48), (4, 100)])
def test_transient_faults_deliver_every_good_sample_once_in_order(
    tmp_path: Path, downloads: int, seed: int
) -> None:
    files, keys = write_dataset(tmp_path)
    pattern = f"shard-{{000..{SHARDS - 1:03d}}}.tar"
    clean, _ = read_all(client_config(str(tmp_path / pattern), concurrent_downloads=downloads))
    chaos = Chaos(files, seed=seed)
    started = time.monotonic()
    with Server.files(files, fault=chaos) as server:
        base = server.url
        samples, stats = read_all(client_config(base + pattern, concurrent_downloads=downloads))
    assert time.monotonic() - started < 15
    assert [s.id for s in samples] == [s.id for s in clean]  # faults do not change the order
    assert sorted(s.id for s in samples) == keys
    check_contents(samples, files)
    assert set(chaos.faults) == set(FAULTS)  # every kind happened (the seed makes it so)
    assert len(server.requests) == len(files) + sum(chaos.faults.values())
    assert (stats.samples, stats.skipped, stats.source_errors) == (len(keys), 2, 0)
    assert set(stats.skip_reasons) == {"DecodeError"}


def test_a_shard_that_always_fails_is_counted_and_the_rest_arrive_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAGO_MAX_RETRIES", "3")
    files, keys = write_dataset(tmp_path)
    chaos = Chaos(files, seed=3, always_500={"shard-006.tar"})
    lost = {f"s{i:04d}" for i in range(6 * PER_SHARD, 7 * PER_SHARD)}
    started = time.monotonic()
    with Server.files(files, fault=chaos) as server:
        config = client_config(server.url + f"shard-{{000..{SHARDS - 1:03d}}}.tar")
        samples, stats = read_all(config)
    assert time.monotonic() - started < 15
    ids = [s.id for s in samples]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == [key for key in keys if key not in lost]
    # The lost shard's slot goes on with its next shard: still a fixed round-robin order.
    shards = [
        [f"s{i:04d}" for i in range(s * PER_SHARD, (s + 1) * PER_SHARD)] for s in range(SHARDS)
    ]
    slots = [[k for s in range(j, SHARDS, 8) if s != 6 for k in shards[s]] for j in range(8)]
    expected = [slot[i] for i in range(max(map(len, slots))) for slot in slots if i < len(slot)]
    assert ids == [key for key in expected if key not in CORRUPT]
    check_contents(samples, files)
    assert server.per_name()["shard-006.tar"] == 3  # DATAGO_MAX_RETRIES attempts, then lost
    assert (stats.source_errors, stats.skipped) == (1, 2)


def test_resume_across_different_faults_is_exact(tmp_path: Path) -> None:
    files, keys = write_dataset(tmp_path)
    pattern = f"shard-{{000..{SHARDS - 1:03d}}}.tar"
    source = {"concurrent_downloads": 4, "random_sampling": True, "seed": 1}
    with Server.files(files, fault=Chaos(files, seed=8)) as server:
        config = client_config(server.url + pattern, **source)
        with DatagoClient(config, environment=fast()) as client:
            head = ids_of(client, 70)
            state = client.state_dict()
    with Server.files(files, fault=Chaos(files, seed=9, rate=0.2)) as server:
        config = client_config(server.url + pattern, **source)
        with DatagoClient(config, environment=fast()) as client:
            client.load_state_dict(state)
            rest = ids_of(client)
    clean, _ = read_all(client_config(str(tmp_path / pattern), **source))
    assert head + rest == [s.id for s in clean]
    assert sorted(head + rest) == keys


def test_bad_tar_inputs_are_counted_never_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(gzip_stream, "MAX_INFLATED_PER_CHUNK", 8 << 20)
    good = {f"g{i}": sample_members(i) for i in range(5)}
    shards = {
        "good.tar": raw_tar(*members_of("g0", good["g0"]), *members_of("g1", good["g1"])),
        "garbage.tar": random.Random(0).randbytes(20_000),
        "empty.tar": b"",
        "html.tar": b"<html><body>502 Bad Gateway</body></html>",
        "huge-member.tar": raw_tar(  # g2 is whole; the next header claims 8 GiB
            *members_of("g2", good["g2"]),
            *members_of("lost1", sample_members(9)),
            raw_header(b"huge.jpg", size_field=b"77777777777\x00"),
        ),
        "past-the-end.tar": b"".join(members_of("g4", good["g4"]))
        + raw_header(b"big.jpg", 50 << 20),  # g4 is whole: the next member has another key
        "huge-pax.tar": raw_header(b"././@PaxHeader", 64 << 20, b"x") + bytes(4096),
        "names.tar": raw_tar(
            raw_member(b"../../etc/passwd", b"root"),
            raw_member(b"/abs.jpg", b"x"),
            raw_member(b"\xff\xfe.jpg", b"x"),
            pax_member(b"a\x00b.jpg", b"x"),
            pax_member(b"x" * 9000 + b".jpg", b"x"),
            *members_of("g3", good["g3"]),
        ),
        "metadata.tar": raw_tar(
            *members_of("badjson", {"jpg": good["g0"]["jpg"], "json": b"{not json"}),
            *members_of("badextra", {"jpg": good["g1"]["jpg"], "png": b"\x89PNG corrupt"}),
            *members_of("noimage", {"txt": b"caption", "json": b"{}"}),
            *members_of("undecodable", {"jpg": b"\xff\xd8\xff\xe0 corrupt"}),
        ),
        "bomb.tgz": gzip.compress(bytes(64 << 20)),  # 64 MiB of zeros in 64 KB
    }
    for name, data in shards.items():
        (tmp_path / name).write_bytes(data)
    config = client_config([str(tmp_path / name) for name in shards], concurrent_downloads=4)
    started = time.monotonic()
    samples, stats = read_all(config)
    assert time.monotonic() - started < 15
    # as the Rust wheel: bad JSON stays text, a bad extra image is left out of its sample
    assert sorted(s.id for s in samples) == sorted([*good, "badjson", "badextra"])
    by_id = {s.id: s for s in samples}
    assert by_id.pop("badjson").attributes_dict == {"json": "{not json"}
    assert by_id.pop("badextra").additional_images == {}
    assert stats.dropped_members == 1
    for sample in by_id.values():
        assert sample.attributes_dict["txt"] == good[sample.id]["txt"].decode()
    reasons = {  # each lost shard is logged with why
        "garbage.tar": "bad tar header checksum",
        "empty.tar": "empty stream (0 bytes)",
        "html.tar": "truncated inside a header",
        "huge-member.tar": "'huge.jpg' at byte 9216 claims 8589934591 bytes, over the limit",
        "past-the-end.tar": "truncated inside member 'big.jpg'",
        "huge-pax.tar": "claims 67108864 bytes, over the limit of 1048576",
        "bomb.tgz": "a gzip bomb?",
    }
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    for name, reason in reasons.items():
        assert [m for m in logged if f"/{name}'" in m and reason in m], name
    assert stats.source_errors == len(reasons)
    assert stats.skip_reasons == {
        "shard fault": 2,  # lost1 (complete, but nothing says so) and big
        "bad member name": 5,
        "no image": 1,
        "DecodeError": 1,
    }


def members_of(key: str, members: dict[str, bytes]) -> list[bytes]:
    return [raw_member(f"{key}.{ext}".encode(), data) for ext, data in members.items()]
