"""Resume cost: time to the first sample and bytes fetched after `load_state_dict`, seeking
against replaying, at 10 %, 50 % and 90 % of a webdataset pass over loopback HTTP.

    python -m benchmarks.bench_resume [--shards 200] [--per-shard 10] [--sample-kb 40]

The shards (each sample a small JPEG and `--sample-kb` of other bytes) are generated in
memory and served by aiohttp on 127.0.0.1 in this process, which counts the bytes
it sends. For each position a first client reads up to it and saves its state; then a new
client loads the state and the clock runs until its first sample (requests and bytes are
those the server had sent by then): once as built (`seek`),
once with the webdataset node's seeking turned off (`replay`: the engine's skip-by-count,
what every source did before sources could seek). Both run in this same process, so their
ratio holds on any machine. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import logging
import os
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import numpy as np
from aiohttp import web
from aiohttp.test_utils import TestServer

from datago import DatagoClient
from datago.demo import synthetic_photo
from datago.sources import SOURCES


class CountingServer:
    """Static files with `Range` support; counts the requests and body bytes it sends."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.requests = 0
        self.sent = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        data = self.files[request.match_info["name"]]
        self.requests += 1
        start, end, status, headers = 0, len(data), 200, {"Accept-Ranges": "bytes"}
        if asked := request.headers.get("Range"):
            first, _, last = asked.removeprefix("bytes=").partition("-")
            start, end, status = int(first), min(int(last or end - 1) + 1, end), 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = end - start
        await response.prepare(request)
        for offset in range(start, end, 256 << 10):
            piece = data[offset : min(end, offset + (256 << 10))]
            await response.write(piece)
            self.sent += len(piece)
        await response.write_eof()
        return response


@contextmanager
def serving(server: CountingServer) -> Iterator[str]:
    """The server's base URL while it runs on its own loop in a thread."""
    started: Future[tuple[asyncio.AbstractEventLoop, asyncio.Event, str]] = Future()

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{name}", server.handle)
        test_server = TestServer(app, host="127.0.0.1")
        await test_server.start_server()
        stop = asyncio.Event()
        started.set_result((asyncio.get_running_loop(), stop, str(test_server.make_url("/"))))
        await stop.wait()
        await test_server.close()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="bench-server")
    thread.start()
    loop, stop, base = started.result(timeout=10)
    try:
        yield base
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)


def make_shards(shards: int, per_shard: int, sample_kb: int) -> dict[str, bytes]:
    buffer = io.BytesIO()
    synthetic_photo(96, 64, np.random.default_rng(0)).save(buffer, "JPEG", quality=85)
    image, extra = buffer.getvalue(), os.urandom(sample_kb << 10)
    files = {}
    for shard in range(shards):
        tar_bytes = io.BytesIO()
        with tarfile.open(fileobj=tar_bytes, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for index in range(shard * per_shard, (shard + 1) * per_shard):
                for extension, data in (("jpg", image), ("bin", extra)):
                    info = tarfile.TarInfo(f"s{index:08d}.{extension}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        files[f"shard-{shard:06d}.tar"] = tar_bytes.getvalue()
    return files


def first_sample(
    config: dict[str, Any], state: dict[str, Any], seek: bool, server: CountingServer
) -> tuple[float, int, int]:
    """Seconds from loading `state` to the first sample, seeking or replaying, and the
    requests and bytes the server had sent by then."""
    node = SOURCES["webdataset"]
    node.seeks = seek  # an instance attribute over the class's
    server.requests = server.sent = 0
    try:
        with DatagoClient(config) as client:
            start = time.perf_counter()
            client.load_state_dict(state)
            sample = client.get_sample()
            elapsed = time.perf_counter() - start
            requests, sent = server.requests, server.sent
            assert sample is not None
            return elapsed, requests, sent
    finally:
        del node.seeks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=200)
    parser.add_argument("--per-shard", type=int, default=10)
    parser.add_argument("--sample-kb", type=int, default=40)
    parser.add_argument("--downloads", type=int, default=4)
    args = parser.parse_args()
    # A client closed right after its first sample cuts answers short: expected, not news.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    files = make_shards(args.shards, args.per_shard, args.sample_kb)
    total_bytes = sum(map(len, files.values()))
    total = args.shards * args.per_shard
    server = CountingServer(files)
    print(
        f"{args.shards} shards x {args.per_shard} samples ({total_bytes / 1e6:.1f} MB), "
        f"concurrent_downloads {args.downloads}, aiohttp on 127.0.0.1 in-process; "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}\n"
    )
    print("| order | resumed at | mode | first sample (s) | requests | MB fetched | of the set |")
    print("|---|---|---|---|---|---|---|")
    with serving(server) as base:
        last = f"{{000000..{args.shards - 1:06d}}}"
        for order, options in (
            ("in order", {}),
            ("shuffled", {"random_sampling": True, "seed": 1}),
        ):
            source = {"url": f"{base}shard-{last}.tar", "concurrent_downloads": args.downloads}
            config = {"source_type": "webdataset", "source_config": {**source, **options}}
            for percent in (10, 50, 90):
                with DatagoClient(config) as client:
                    for _ in range(total * percent // 100):
                        client.get_sample()
                    state = client.state_dict()
                for mode in ("seek", "replay"):
                    seconds, requests, sent = first_sample(config, state, mode == "seek", server)
                    print(
                        f"| {order} | {percent} % | {mode} | {seconds:.3f} | {requests} "
                        f"| {sent / 1e6:.1f} | {100 * sent / total_bytes:.1f} % |"
                    )


if __name__ == "__main__":
    main()
