"""Soak run: stream many samples from a small looping dataset and watch the RSS.

    python -m benchmarks.soak [--samples 100000] [--images 500]

Passes over the same folder follow each other (a new pass per loop); the RSS is read from
/proc every `--every` samples. A leak shows as a steady climb after the first passes.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from datago import DatagoClient
from datago.demo import write_photos

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--every", type=int, default=5_000)
    parser.add_argument("--folder", type=Path, default=Path("benchmarks/data/soak"))
    args = parser.parse_args()
    sizes = [(256, 192), (192, 256), (224, 224)]
    write_photos(args.folder, args.images, sizes=sizes, png_every=10)
    config = {
        "source_type": "file",
        "source_config": {"root_path": str(args.folder), "random_sampling": True},
        "image_config": {
            "crop_and_resize": True,
            "default_image_size": 224,
            "downsampling_ratio": 16,
            "min_aspect_ratio": 0.5,
            "max_aspect_ratio": 2.0,
        },
        "samples_buffer_size": 64,
    }
    print("| samples | passes | RSS MB | img/s (interval) |")
    print("|---|---|---|---|")
    count, passes, start = 0, 0, time.perf_counter()
    last_count, last_time = 0, start
    with DatagoClient(config) as client:
        while count < args.samples:
            passes += 1
            for sample in client:
                sample.image.to_numpy()
                count += 1
                if count % args.every == 0:
                    now = time.perf_counter()
                    rate = (count - last_count) / (now - last_time)
                    print(f"| {count} | {passes} | {rss_mb():.1f} | {rate:.0f} |", flush=True)
                    last_count, last_time = count, now
                if count >= args.samples:
                    break
        stats = client.stats
    elapsed = time.perf_counter() - start
    print(
        f"\n{count} samples in {elapsed:.0f}s ({count / elapsed:.0f} img/s), "
        f"{stats.skipped} skipped, final RSS {rss_mb():.1f} MB"
    )


if __name__ == "__main__":
    main()
