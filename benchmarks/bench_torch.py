"""DatagoIterDataset in a torch DataLoader vs the usual DataLoader(num_workers=2) + Pillow.

    python -m benchmarks.bench_torch [--count 240] [--repeats 3] [--workloads decode,bucket512]

Writes `count` ~1.2 MP photo-like JPEGs once into benchmarks/data/torch/ (`datago.demo`).
Each method runs in its own subprocess (so no run inherits another's threads or page cache
warm-up order) and yields one uint8 CHW tensor per image (or bucketed batches); the time
runs from building the loader to its last item. Rounds are interleaved; the median is kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import BUCKETS
from benchmarks.bench_imaging import available_cores
from datago.demo import write_photos

if TYPE_CHECKING:
    from datago.torch import Layout

DATA = Path(__file__).parent / "data" / "torch"
# label: (workload, loader, DataLoader workers, datago batch size, tensor layout)
METHODS: dict[str, tuple[str, str, int, int | None, Layout]] = {
    "ours, num_workers=0": ("decode", "datago", 0, None, "chw"),
    "ours, layout=channels_last, num_workers=0": ("decode", "datago", 0, None, "channels_last"),
    "ours, num_workers=2": ("decode", "datago", 2, None, "chw"),
    "torch + PIL, num_workers=2": ("decode", "pil", 2, None, "chw"),
    "ours bucket 512, num_workers=0": ("bucket512", "datago", 0, None, "chw"),
    "ours bucket 512, batch_size=32, num_workers=0": ("bucket512", "datago", 0, 32, "chw"),
    "ours bucket 512, num_workers=2": ("bucket512", "datago", 2, None, "chw"),
    "torch + PIL ImageOps.fit 512 bucket, num_workers=2": ("bucket512", "pil", 2, None, "chw"),
}


def run_one(label: str, folder: Path) -> dict[str, float]:
    """Inside the subprocess: iterate the method's DataLoader once; images and seconds."""
    from torch.utils.data import DataLoader

    workload, loader, num_workers, batch_size, layout = METHODS[label]
    start = time.perf_counter()
    if loader == "datago":
        from datago.torch import DatagoIterDataset

        config: dict[str, Any] = {
            "source_type": "file",
            "source_config": {"root_path": str(folder)},
        }
        if workload == "bucket512":
            config["image_config"] = BUCKETS
        dataset: Any = DatagoIterDataset(
            config, batch_size=batch_size, tensors=batch_size is None, layout=layout
        )
    else:
        dataset = PillowFiles(sorted(folder.glob("*.jpg")), bucket=workload == "bucket512")
    count = 0
    for item in DataLoader(dataset, batch_size=None, num_workers=num_workers):
        count += item["image"].shape[0] if batch_size else 1
    return {"count": count, "seconds": time.perf_counter() - start}


class PillowFiles:
    """The map-style dataset a torch user writes: PIL decode (+ ImageOps.fit), CHW tensor."""

    def __init__(self, paths: list[Path], bucket: bool) -> None:
        from datago.imaging.buckets import BucketTable

        self.paths = paths
        self.table = BucketTable.build(512, 32, 0.5, 2.0) if bucket else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import numpy as np
        import torch
        from PIL import Image, ImageOps

        with Image.open(self.paths[index]) as image:
            rgb = image.convert("RGB")
        if self.table is not None:
            rgb = ImageOps.fit(rgb, self.table.choose(*rgb.size), Image.Resampling.LANCZOS)
        # numpy's transpose copy: ~8x faster than torch's permute().contiguous() here
        pixels = torch.from_numpy(np.ascontiguousarray(np.asarray(rgb).transpose(2, 0, 1)))
        return {"id": str(self.paths[index]), "image": pixels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=240, help="images in the folder")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; median kept")
    parser.add_argument("--workloads", default="decode,bucket512")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one method, in a subprocess
    args = parser.parse_args()
    folder = DATA / f"photos-{args.count}"
    if args.run:
        print(json.dumps(run_one(args.run, folder)))
        return
    write_photos(folder, args.count, png_every=0)
    workloads = args.workloads.split(",")
    labels = [label for label, method in METHODS.items() if method[0] in workloads]
    print(f"{args.count} JPEGs (~1.2 MP), two busy processes get {available_cores():.2f} cores\n")
    rates: dict[str, list[float]] = {label: [] for label in labels}
    for _ in range(args.repeats):
        for label in labels:
            command = [sys.executable, "-m", "benchmarks.bench_torch", "--count", str(args.count)]
            done = subprocess.run(
                [*command, "--run", label], capture_output=True, text=True, check=True, timeout=300
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            assert result["count"] == args.count, result
            rates[label].append(result["count"] / result["seconds"])
    print("| workload | method | img/s (median) | runs | vs torch + PIL |")
    print("|---|---|---|---|---|")
    for workload in workloads:
        mine = [label for label in labels if METHODS[label][0] == workload]
        baseline = next(label for label in mine if METHODS[label][1] == "pil")
        base = statistics.median(rates[baseline])
        for label in mine:
            median = statistics.median(rates[label])
            runs = ", ".join(f"{rate:.0f}" for rate in rates[label])
            print(f"| {workload} | {label} | {median:.0f} | {runs} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
