"""`python -m datago`: `demo` streams a generated data set; `bench` measures any data set."""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from datago.client import DatagoClient
from datago.demo import write_photos
from datago.errors import DatagoError
from datago.imaging import PixelArray
from datago.stats import Stats

_PROGRESS_DELAY_S = 2.0  # short runs print no progress bar at all


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datago", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="generate a small photo folder and stream it")
    demo.add_argument("--folder", type=Path, default=Path("datago-demo"))
    demo.add_argument("--count", type=int, default=200, help="images to generate")
    demo.add_argument("--image-size", type=int, default=512, help="bucket side; 0: no resize")
    bench = commands.add_parser("bench", help="stream a data set and report images/s")
    where = bench.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path, help="a datago JSON config file")
    where.add_argument("--source", choices=["file", "webdataset"])
    bench.add_argument("--path", help="--source file: the folder to walk")
    bench.add_argument("--url", help="--source webdataset: shard paths or URLs, brace patterns")
    bench.add_argument("--limit", type=int, help="stop after this many samples")
    bench.add_argument(
        "--image-size", type=int, help="crop+resize to aspect-ratio buckets of this side; 0: off"
    )
    bench.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return run_demo(args.folder, args.count, args.image_size)
    try:
        config = bench_config(args)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    try:
        return run_bench(config, as_json=args.json)
    except DatagoError as exc:  # a bad config or a dead source: one line, not a traceback
        if args.json:
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        print(f"python -m datago bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


def run_demo(folder: Path, count: int, image_size: int) -> int:
    """Generate `count` photos (once) and stream them through aspect-ratio buckets."""
    start = time.perf_counter()
    write_photos(folder, count, png_every=10)
    print(f"dataset: {count} photos in {folder}/ ({time.perf_counter() - start:.1f}s to prepare)")
    config: dict[str, Any] = {
        "source_type": "file",
        "source_config": {"root_path": str(folder)},
        "limit": count,
        "samples_buffer_size": 32,
    }
    if image_size:
        config["image_config"] = bucket_config(image_size)
    buckets: collections.Counter[tuple[int, int]] = collections.Counter()
    with DatagoClient(config) as client:
        for sample in tqdm(client, total=count, unit="img", file=sys.stderr):
            buckets[sample.image.size] += 1
        stats = client.stats
    print(summary(stats))
    print("buckets (width x height: images):")
    for (width, height), n in sorted(buckets.items()):
        print(f"  {width:5d} x {height:<5d} {n}")
    return 0 if stats.samples == count else 1


def bucket_config(image_size: int) -> dict[str, Any]:
    """The aspect-ratio bucket `image_config` of the demo and the benchmarks."""
    return {
        "crop_and_resize": True,
        "default_image_size": image_size,
        "downsampling_ratio": 32,
        "min_aspect_ratio": 0.5,
        "max_aspect_ratio": 2.0,
    }


def bench_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config `bench` runs: the `--config` file or one built from `--source`, plus overrides."""
    config: dict[str, Any]
    if args.config is not None:
        config = json.loads(args.config.read_text())
    elif args.source == "file":
        if not args.path:
            raise ValueError("--source file needs --path")
        config = {"source_type": "file", "source_config": {"root_path": args.path}}
    else:
        if not args.url:
            raise ValueError("--source webdataset needs --url")
        config = {"source_type": "webdataset", "source_config": {"url": args.url}}
    if args.limit is not None:
        config["limit"] = args.limit
    if args.image_size is not None:
        config.pop("image_config", None)
        if args.image_size:
            config["image_config"] = bucket_config(args.image_size)
    return config


def run_bench(config: dict[str, Any], *, as_json: bool) -> int:
    """Stream every sample, touching its pixels as a consumer would, and report the speed.

    The timer runs from client construction to the last sample.
    """
    thread_cpu, process_cpu = time.thread_time(), _process_cpu_s()
    start = time.perf_counter()
    first_sample_s = 0.0
    with DatagoClient(config) as client:
        progress = tqdm(
            total=client.config.limit, unit="img", file=sys.stderr, delay=_PROGRESS_DELAY_S
        )
        with progress:
            for sample in client:
                touch(sample.image.to_numpy())
                first_sample_s = first_sample_s or time.perf_counter() - start
                progress.update()
        elapsed = time.perf_counter() - start
        stats = client.stats
    report = bench_report(stats, elapsed, first_sample_s)
    report["consumer_cpu_s"] = time.thread_time() - thread_cpu
    report["process_cpu_s"] = _process_cpu_s() - process_cpu
    print(json.dumps(report) if as_json else format_report(report))
    return 0 if stats.samples else 1


def touch(pixels: PixelArray) -> int:
    """Read one value per 4 KiB of the pixels, so that lazily produced memory is paid for."""
    return int(pixels.reshape(-1)[:: max(4096 // pixels.itemsize, 1)].sum())


def bench_report(stats: Stats, elapsed_s: float, first_sample_s: float) -> dict[str, Any]:
    """The numbers of one `bench` run, JSON-ready."""
    wall = max(elapsed_s, 1e-9)
    return {
        "samples": stats.samples,
        "elapsed_s": elapsed_s,
        "images_per_s": stats.samples / wall,
        "mb_per_s": stats.bytes_read / 1e6 / wall,
        "bytes_read": stats.bytes_read,
        "first_sample_s": first_sample_s,
        "read_s": stats.read_s,
        "decode_s": stats.decode_s,
        "transform_s": stats.transform_s,
        "wait_s": stats.wait_s,
        "skipped": stats.skipped,
        "source_errors": stats.source_errors,
        "skip_reasons": dict(stats.skip_reasons),
        "decoders": dict(stats.decoders),
    }


def format_report(report: dict[str, Any]) -> str:
    """`bench_report` for people."""
    wall = max(report["elapsed_s"], 1e-9)
    return "\n".join(
        [
            f"samples: {report['samples']} in {report['elapsed_s']:.2f}s = "
            f"{report['images_per_s']:.1f} img/s, {report['mb_per_s']:.1f} MB/s read; "
            f"first sample after {report['first_sample_s']:.3f}s",
            f"skipped: {report['skipped']} {report['skip_reasons'] or ''}  "
            f"source errors: {report['source_errors']}",
            f"thread time: read {report['read_s']:.2f}s, decode {report['decode_s']:.2f}s, "
            f"transform {report['transform_s']:.2f}s; consumer waited {report['wait_s']:.2f}s",
            f"decoders: {report['decoders']}",
            f"CPU: consumer thread {report['consumer_cpu_s']:.2f}s "
            f"({100 * report['consumer_cpu_s'] / wall:.0f}% of a core), "
            f"whole process {report['process_cpu_s']:.2f}s "
            f"({report['process_cpu_s'] / wall:.2f} cores)",
        ]
    )


def summary(stats: Stats) -> str:
    """One human line per stage, from `client.stats`."""
    rate = stats.samples / stats.elapsed_s if stats.elapsed_s else 0.0
    megabytes = stats.bytes_read / 1e6
    return "\n".join(
        [
            f"samples: {stats.samples} in {stats.elapsed_s:.2f}s = {rate:.0f} img/s, "
            f"{megabytes / max(stats.elapsed_s, 1e-9):.1f} MB/s read",
            f"skipped: {stats.skipped} {dict(stats.skip_reasons) or ''}  "
            f"source errors: {stats.source_errors}",
            f"thread time: read {stats.read_s:.2f}s, decode {stats.decode_s:.2f}s, "
            f"transform {stats.transform_s:.2f}s; consumer waited {stats.wait_s:.2f}s",
            f"decoders: {dict(stats.decoders)}",
        ]
    )


def _process_cpu_s() -> float:
    times = os.times()
    return times.user + times.system
