"""obstore vs fsspec/s3fs (vs our ObjectStore's two read paths and aiohttp client) on moto's S3.

The evidence behind `datago/storage/object_store.py`'s choice of obstore. moto runs in its own
process (`moto_server`), so its CPU is counted apart from ours; every measurement runs in a
fresh interpreter (clean RSS, no warm pools). s3fs is optional (`pip install s3fs`).

    python -m benchmarks.object_store_libs                  # ~4 min: 256 MB object, 20k keys
    python -m benchmarks.object_store_libs --big-mb 64 --keys 3000 --repeat 1

Tasks: `stream` (the whole object in 1 MiB chunks), `offset` (from byte 100 MiB on),
`small` (1000 whole reads of 100-byte objects, one after another: per-request CPU),
`list` (every key under a prefix: time to the first key, total, peak RSS).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

BUCKET = "bench"
BIG = "big.bin"
OFFSET = 100 << 20
CREDENTIALS = {"access_key_id": "testing", "secret_access_key": "testing", "region": "us-east-1"}
LIBS = ("obstore", "datago", "datago-obstore", "s3fs", "aiohttp")
TASKS = {
    "obstore": ("stream", "offset", "small", "list"),
    "datago": ("stream", "offset", "small", "list"),  # signed URLs through our HttpClient
    "datago-obstore": ("stream", "offset", "small"),  # the same, reading through obstore
    "s3fs": ("stream", "offset", "small", "list"),
    "aiohttp": ("stream",),  # our HttpClient, unsigned: moto serves the object anyway
}


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(field: str) -> int:
    """`VmRSS` (now) or `VmHWM` (peak; unlike ru_maxrss, not inherited across exec)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def small_keys(count: int) -> list[str]:
    return [f"many/{i:08d}.jpg" for i in range(count)]


def s3_store(endpoint: str) -> Any:
    from obstore.store import S3Store

    config: Any = {"endpoint": endpoint, **CREDENTIALS}
    return S3Store(BUCKET, config=config, client_options={"allow_http": True})


async def fill(endpoint: str, big_mb: int, keys: int) -> None:
    from obstore import put_async

    store = s3_store(endpoint)
    await put_async(store, BIG, os.urandom(big_mb << 20))
    limit = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with limit:
            await put_async(store, key, b"x" * 100)

    await asyncio.gather(*(put(key) for key in small_keys(keys)))
    await asyncio.sleep(0.05)  # let obstore's threads leave Python before exit


async def measure(lib: str, task: str, endpoint: str) -> tuple[int, float | None]:
    """Bytes or keys seen, and the seconds to the first key (listing only)."""
    url = f"s3://{BUCKET}/{BIG}"
    start = OFFSET if task == "offset" else 0
    if lib.startswith("datago"):
        from datago.storage.object_store import ObjectStore

        options: dict[str, Any] = {"endpoint": endpoint, **CREDENTIALS}
        if lib == "datago-obstore":  # a header only obstore's requests carry: it reads
            options["default_headers"] = {"x-bench": "obstore"}
        store = ObjectStore(attempts=3, options=options)
        try:
            if task == "small":
                return sum(
                    [len(await store.read(f"s3://{BUCKET}/{k}")) for k in small_keys(1000)]
                ), None
            if task == "list":
                return await count_keys(store.list(f"s3://{BUCKET}/many/"))
            return await byte_count(store.stream(url, start)), None
        finally:
            await store.close()
    if lib == "obstore":
        import obstore

        s3 = s3_store(endpoint)
        try:
            if task == "small":
                reads = [
                    await (await obstore.get_async(s3, k)).bytes_async() for k in small_keys(1000)
                ]
                return sum(map(len, reads)), None
            if task == "list":
                return await count_keys(
                    meta
                    async for page in obstore.list(s3, "many", chunk_size=1000)
                    for meta in page
                )
            result = await obstore.get_async(s3, BIG, options={"range": {"offset": start}})
            return await byte_count(result.stream(min_chunk_size=1 << 20)), None
        finally:
            await asyncio.sleep(0.05)
    if lib == "s3fs":
        fs: Any = importlib.import_module("s3fs").S3FileSystem(
            asynchronous=True,
            key="testing",
            secret="testing",
            endpoint_url=endpoint,
            client_kwargs={"region_name": "us-east-1"},
            skip_instance_cache=True,
        )
        await fs.set_session()
        try:
            if task == "small":
                return sum(
                    [len(await fs._cat_file(f"{BUCKET}/{k}")) for k in small_keys(1000)]
                ), None
            if task == "list":  # its public listing (find/ls/walk) buffers every key first
                started = time.perf_counter()
                return len(await fs._find(f"{BUCKET}/many/")), time.perf_counter() - started
            answer = await fs._call_s3(
                "get_object", Bucket=BUCKET, Key=BIG, Range=f"bytes={start}-"
            )
            body, total = answer["Body"], 0
            while chunk := await body.read(1 << 20):
                total += len(chunk)
            body.close()
            return total, None
        finally:
            await fs._s3.close()
    from datago.storage.http import HttpClient

    client = HttpClient(attempts=3)
    try:
        return await byte_count(client.stream(f"{endpoint}/{BUCKET}/{BIG}")), None
    finally:
        await client.close()


async def byte_count(chunks: Any) -> int:
    """Bytes in a stream of chunks, none kept."""
    size = 0
    async for chunk in chunks:
        size += len(chunk)
    return size


async def count_keys(items: Any) -> tuple[int, float]:
    started, first, count = time.perf_counter(), 0.0, 0
    async for _ in items:
        if count == 0:
            first = time.perf_counter() - started
        count += 1
    return count, first


def run_one(lib: str, task: str, endpoint: str, moto_pid: int) -> dict[str, Any]:
    modules = {
        "datago": "datago.storage.object_store",
        "datago-obstore": "datago.storage.object_store",
        "aiohttp": "datago.storage.http",
    }
    importlib.import_module(modules.get(lib, lib))  # imports are not measured
    rss, cpu, moto = memory_kib("VmRSS"), os.times(), cpu_of(moto_pid)
    started = time.perf_counter()
    count, first_key = asyncio.run(measure(lib, task, endpoint))
    wall, after = time.perf_counter() - started, os.times()
    ours = after.user - cpu.user + after.system - cpu.system
    peak = (memory_kib("VmHWM") - rss) / 1024
    row = {"lib": lib, "task": task, "count": count, "wall_s": wall, "our_cpu_s": ours}
    row |= {"moto_cpu_s": cpu_of(moto_pid) - moto, "peak_rss_mib": peak, "first_key_s": first_key}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--big-mb", type=int, default=256)
    parser.add_argument("--keys", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--libs", default=",".join(LIBS))
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)  # LIB TASK ENDPOINT PID
    args = parser.parse_args()
    if args.measure:
        lib, task, endpoint, pid = args.measure
        print(json.dumps(run_one(lib, task, endpoint, int(pid))))
        return
    sock = __import__("socket").socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    moto = subprocess.Popen(
        [
            os.path.join(os.path.dirname(sys.executable), "moto_server"),
            "-H",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(endpoint + "/")
                break
            except OSError:
                time.sleep(0.1)
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"))
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/{BUCKET}", method="PUT"))
        asyncio.run(fill(endpoint, args.big_mb, args.keys))
        rows = []
        for _ in range(args.repeat):
            for lib in args.libs.split(","):
                if lib == "s3fs" and importlib.util.find_spec("s3fs") is None:
                    continue
                for task in TASKS[lib]:
                    command = [sys.executable, "-m", "benchmarks.object_store_libs"]
                    command += ["--measure", lib, task, endpoint, str(moto.pid)]
                    done = subprocess.run(command, capture_output=True, text=True, check=False)
                    line = done.stdout.strip().splitlines()[-1:] or ["{}"]
                    row = {"lib": lib, "task": task} | json.loads(line[0])
                    rows.append(row | {"exit": done.returncode})
        report(rows)
    finally:
        moto.terminate()
        moto.wait()


def report(rows: list[dict[str, Any]]) -> None:
    print(
        "| lib | task | runs | MB/s | our CPU ms/MB | moto CPU ms/MB | our CPU ms/request "
        "| first key s | total s | peak RSS MiB | exit codes |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    keys = list(dict.fromkeys((row["lib"], row["task"]) for row in rows))
    for lib, task in keys:
        every = [row for row in rows if (row["lib"], row["task"]) == (lib, task)]
        mine = [row for row in every if "count" in row] or [{"count": 0}]

        def med(field: str, mine: list[dict[str, Any]] = mine) -> float:
            return statistics.median(row.get(field) or 0.0 for row in mine)

        megabytes = med("count") / 1e6
        per_mb = task in ("stream", "offset")
        cells = [
            f"{megabytes / med('wall_s'):.0f}" if per_mb and megabytes else "",
            f"{1000 * med('our_cpu_s') / megabytes:.2f}" if per_mb and megabytes else "",
            f"{1000 * med('moto_cpu_s') / megabytes:.2f}" if per_mb and megabytes else "",
            f"{med('our_cpu_s'):.2f}" if task == "small" else "",
            f"{med('first_key_s'):.2f}" if task == "list" else "",
            f"{med('wall_s'):.2f}",
            f"{med('peak_rss_mib'):.0f}",
            ",".join(str(row["exit"]) for row in every),
        ]
        print(f"| {lib} | {task} | {len(every)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
