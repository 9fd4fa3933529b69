"""`python -m datago`: `demo` streams a generated dataset and reports what the loader did."""

from __future__ import annotations

import argparse
import collections
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from datago.client import DatagoClient
from datago.demo import write_photos
from datago.stats import Stats


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m datago", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="generate a small photo folder and stream it")
    demo.add_argument("--folder", type=Path, default=Path("datago-demo"))
    demo.add_argument("--count", type=int, default=200, help="images to generate")
    demo.add_argument("--image-size", type=int, default=512, help="bucket side; 0: no resize")
    args = parser.parse_args(argv)
    return run_demo(args.folder, args.count, args.image_size)


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
        config["image_config"] = {
            "crop_and_resize": True,
            "default_image_size": image_size,
            "downsampling_ratio": 32,
            "min_aspect_ratio": 0.5,
            "max_aspect_ratio": 2.0,
        }
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
        ]
    )
