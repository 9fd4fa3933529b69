"""WebDataset source speed: tar parsing (ours vs `tarfile`), shard streaming without decode,
and (with `--decode N`) `DatagoClient` images/s on the same photos as files and as shards.

    python -m benchmarks.bench_webdataset [--samples 2000] [--image-kb 300] [--decode 200]

Prints a markdown table. Streaming shards are generated in a temporary folder and served by
aiohttp on 127.0.0.1 in the same process (its CPU counts against the loader). The decode rows
use photos from `datago.demo` in benchmarks/data/ and `python -m http.server` in a subprocess.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from datago import DatagoClient
from datago.config import Environment, WebDatasetSourceConfig
from datago.sources.base import SourceContext, Split
from datago.sources.tar_stream import TarStreamParser
from datago.sources.wds_groups import SampleGrouper
from datago.sources.webdataset import WebDatasetSource
from datago.stats import Stats

DECODE_FOLDER = Path("benchmarks/data/wds_decode")


def make_shard(samples: int, image_bytes: int, first: int = 0) -> bytes:
    """A shard of `samples` samples: jpg (random bytes), json, txt and cls members."""
    buffer = io.BytesIO()
    image = os.urandom(image_bytes)
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for index in range(first, first + samples):
            members = {
                "jpg": image,
                "json": json.dumps({"index": index, "width": 640}).encode(),
                "txt": f"a caption for sample {index}".encode(),
                "cls": str(index % 1000).encode(),
            }
            for extension, data in members.items():
                info = tarfile.TarInfo(f"s{index:08d}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def parse_ours(shard: bytes, chunk: int = 1 << 20) -> int:
    parser = TarStreamParser()
    members = 0
    for start in range(0, len(shard), chunk):
        members += len(parser.feed(shard[start : start + chunk]))
    parser.finish()
    return members


def parse_tarfile(shard: bytes) -> int:
    members = 0
    with tarfile.open(fileobj=io.BytesIO(shard), mode="r|") as tar:
        for info in tar:
            file = tar.extractfile(info)
            if file is not None:
                file.read()
                members += 1
    return members


def group_all(shard: bytes) -> int:
    """Parse and group a shard into samples: the per-sample work done on the event loop."""
    parser, grouper = TarStreamParser(), SampleGrouper("bench", "jpg", Stats())
    samples = sum(grouper.add(member) is not None for member in parser.feed(shard))
    return samples + (grouper.flush() is not None)


def best_rate(function: object, *args: object, repeat: int = 3) -> tuple[float, int]:
    """(items per second, items) of the fastest of `repeat` runs."""
    best, items = float("inf"), 0
    for _ in range(repeat):
        start = time.perf_counter()
        items = function(*args)  # type: ignore[operator]
        best = min(best, time.perf_counter() - start)
    return items / best, items


async def stream(url: str, downloads: int) -> tuple[float, int, int]:
    """(seconds, samples, encoded bytes) to stream every sample of `url`."""
    source = WebDatasetSourceConfig(url=url, concurrent_downloads=downloads)
    with ThreadPoolExecutor(2) as executor:
        ctx = SourceContext(environment=Environment(), executor=executor, stats=Stats())
        start = time.perf_counter()
        count = size = 0
        async for sample, _ in WebDatasetSource().open(source, Split(), ctx, None):
            count += 1
            size += len(sample.image) if isinstance(sample.image, bytes) else 0
        return time.perf_counter() - start, count, size


async def streaming_rows(shards: list[bytes], folder: Path) -> list[str]:
    app = web.Application()
    app.router.add_static("/", folder)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    rows = []
    try:
        last = f"{{000..{len(shards) - 1:03d}}}"
        targets = [("local files", str(folder / f"shard-{last}.tar"))]
        targets.append(("HTTP loopback", str(server.make_url("/")) + f"shard-{last}.tar"))
        for name, url in targets:
            for downloads in (1, 4):
                seconds, count, size = await stream(url, downloads)
                rows.append(
                    f"| stream, {name}, {downloads} download(s) | {count / seconds:,.0f} samples/s"
                    f" | {size / seconds / 1e6:,.0f} MB/s of images |"
                )
    finally:
        await server.close()
    return rows


def pack_shards(photos: list[Path], folder: Path, per_shard: int = 50) -> str:
    """Tar the photos as `<key>.jpg` samples; returns the shard brace pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = (len(photos) + per_shard - 1) // per_shard
    for shard in range(shards):
        with tarfile.open(folder / f"shard-{shard:03d}.tar", "w") as tar:
            for photo in photos[shard * per_shard : (shard + 1) * per_shard]:
                tar.add(photo, arcname=photo.name)
    return f"shard-{{000..{shards - 1:03d}}}.tar"


def one_pass(source_type: str, source: Mapping[str, object], resize: bool) -> tuple[float, float]:
    """(images/s, CPU ms of this process per image) of one `DatagoClient` pass."""
    config: dict[str, object] = {"source_type": source_type, "source_config": source}
    if resize:
        config["image_config"] = {
            "crop_and_resize": True,
            "default_image_size": 512,
            "downsampling_ratio": 16,
            "min_aspect_ratio": 0.5,
            "max_aspect_ratio": 2.0,
        }
    with DatagoClient(config) as client:
        start, cpu = time.perf_counter(), time.process_time()
        count = sum(1 for _ in client)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    return count / elapsed, 1000 * cpu / count


def decode_rows(count: int) -> list[str]:
    from datago.demo import write_photos

    photos = write_photos(DECODE_FOLDER / "photos", count, sizes=[(1280, 960), (960, 1280)])
    pattern = pack_shards(photos, DECODE_FOLDER / "shards")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    server = subprocess.Popen(
        [*command, "--directory", str(DECODE_FOLDER / "shards")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        sources = [
            ("files", "file", {"root_path": str(DECODE_FOLDER / "photos")}),
            ("wds local", "webdataset", {"url": str(DECODE_FOLDER / "shards" / pattern)}),
            ("wds HTTP", "webdataset", {"url": f"http://127.0.0.1:{port}/{pattern}"}),
        ]
        rows = []
        for resize in (False, True):
            rates: dict[str, float] = {}
            cpus: dict[str, float] = {}
            for _ in range(3):  # rounds interleave the sources, so load drifts hit all alike
                for name, kind, src in sources:
                    rate, cpu = one_pass(kind, src, resize)
                    rates[name] = max(rates.get(name, 0.0), rate)
                    cpus[name] = min(cpus.get(name, float("inf")), cpu)
            what = "crop+resize 512" if resize else "decode"
            rows += [
                f"| DatagoClient {what}, {count} 1.2 MP JPEGs, {name} | {rates[name]:,.0f} img/s"
                f" | {cpus[name]:.1f} ms CPU/img in this process (best of 3) |"
                for name in rates
            ]
        return rows
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=2000, help="samples in all shards")
    parser.add_argument("--image-kb", type=int, default=300, help="bytes of each image, KiB")
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--decode", type=int, default=0, help="photos for the decode rows")
    args = parser.parse_args()

    small = make_shard(2000, 2048)
    print("| measurement | rate | note |")
    print("|---|---|---|")
    for label, shard in (("2 KiB images", small), (f"{args.image_kb} KiB images", None)):
        shard = shard or make_shard(max(args.samples // args.shards, 1), args.image_kb << 10)
        ours, members = best_rate(parse_ours, shard)
        theirs, _ = best_rate(parse_tarfile, shard)
        print(
            f"| tar parse, {label} ({members} members) | {ours:,.0f} members/s"
            f" | tarfile `r|`: {theirs:,.0f} members/s ({ours / theirs:.1f}x) |"
        )
    rate, _ = best_rate(group_all, small)
    print(f"| parse + group, 2 KiB images | {rate:,.0f} samples/s | {1e6 / rate:.1f} us/sample |")
    per_shard = max(args.samples // args.shards, 1)
    shards = [make_shard(per_shard, args.image_kb << 10, i * per_shard) for i in range(args.shards)]
    with tempfile.TemporaryDirectory() as folder:
        for index, shard in enumerate(shards):
            (Path(folder) / f"shard-{index:03d}.tar").write_bytes(shard)
        for row in asyncio.run(streaming_rows(shards, Path(folder))):
            print(row)
    for row in decode_rows(args.decode) if args.decode else []:
        print(row)


if __name__ == "__main__":
    main()
