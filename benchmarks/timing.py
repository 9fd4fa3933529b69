"""Time one stream of decoded images as a training loop would consume it.

Shared by every loader, Rust datago's included: it imports nothing but numpy, so it also runs
in the Rust wheel's venv.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import numpy as np


def touch(pixels: np.ndarray[Any, Any]) -> int:
    """Read one value per 4 KiB, so that lazily produced memory is paid for inside the timer."""
    return int(pixels.reshape(-1)[:: max(4096 // pixels.itemsize, 1)].sum())


def process_cpu_s() -> float:
    """CPU seconds of this process and its reaped children (torch DataLoader workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def machine_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU time of the whole machine so far, in ticks, from /proc/stat."""
    with open("/proc/stat") as stat:
        ticks = [int(value) for value in stat.readline().split()[1:9]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return sum(ticks) - idle, sum(ticks)


def time_stream(
    stream: Iterator[np.ndarray[Any, Any]], buckets: list[list[int]] | None
) -> dict[str, Any]:
    """Consume `stream` (the loader is built on its first item), touching every image.

    The timer runs from the first `next()` (client construction) to the last image; CPU is
    read after the loader has shut down. `machine_busy_cores` is how many cores the whole
    machine kept busy meanwhile (this run, servers and anything else). `bad_shape` counts outputs whose (width, height) is
    not one of `buckets` (when given).
    """
    allowed = {(width, height) for width, height in buckets} if buckets else None
    thread_cpu, process_cpu, machine = time.thread_time(), process_cpu_s(), machine_cpu_s()
    start = time.perf_counter()
    first_sample_s, samples, bad_shape, pixels = 0.0, 0, 0, 0
    for array in stream:
        touch(array)
        first_sample_s = first_sample_s or time.perf_counter() - start
        samples += 1
        pixels += array.shape[0] * array.shape[1]
        if allowed is not None and (array.shape[1], array.shape[0]) not in allowed:
            bad_shape += 1
    wall_s = time.perf_counter() - start
    busy, total = (after - before for after, before in zip(machine_cpu_s(), machine, strict=True))
    return {
        "samples": samples,
        "wall_s": wall_s,
        "images_per_s": samples / wall_s,
        "first_sample_s": first_sample_s,
        "megapixels": pixels / 1e6,
        "bad_shape": bad_shape,
        "consumer_cpu_s": time.thread_time() - thread_cpu,
        "process_cpu_s": process_cpu_s() - process_cpu,
        "machine_busy_cores": busy / max(total, 1) * (os.cpu_count() or 1),
    }
