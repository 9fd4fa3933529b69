"""The hand-over to Python types, ours against the Rust wheel, side by side in one run.

    python -m benchmarks.bench_auto_convert [--sets lowres,jpg] [--repeat 3] [--quick]

Three ways to take a decoded image, each as a wheel script would: `get_sample_auto_convert()`
(then `np.asarray` of its PIL image), `get_sample()` + `np.asarray(sample.image)`, and
`get_sample()` + `sample.image.to_numpy_array()`. Each run is a fresh process over a folder of
the benchmark sets (`benchmarks.datasets`, decode only, `DATAGO_MAX_TASKS=2`); runs are
interleaved, ours and the wheel's (`/opt/rust-datago/bin/python -P`, as `rust_measure.py`).
Reported: images/s and the consumer thread's CPU per image, the cost the hand-over puts on
the training loop's thread (median of the repetitions). Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

WAYS = ("auto_convert", "asarray", "to_numpy_array")
WHEEL_PYTHON = Path("/opt/rust-datago/bin/python")
ROOT = Path(__file__).resolve().parent.parent


def stream(config: dict[str, Any], way: str) -> Iterator[np.ndarray[Any, Any]]:
    """The images of one pass, handed over `way`, with whichever `datago` is imported."""
    import datago

    client = datago.DatagoClient(json.dumps(config))
    if way == "auto_convert":
        while (item := client.get_sample_auto_convert()) is not None:
            yield np.asarray(item["image"])
        return
    while (sample := client.get_sample()) is not None:
        yield np.asarray(sample.image) if way == "asarray" else sample.image.to_numpy_array()


def measure_one(spec: dict[str, Any]) -> None:
    """One run, in this process; prints one JSON line."""
    import datago  # before the repository joins sys.path: the wheel's, in the wheel's venv

    sys.path.append(str(ROOT))
    from benchmarks.timing import time_stream

    result = time_stream(stream(spec["config"], spec["way"]), None)
    print(json.dumps({**result, "loader_file": datago.__file__}))


def run(impl: str, spec: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "DATAGO_MAX_TASKS": "2"}
    if impl == "wheel":
        command = [str(WHEEL_PYTHON), "-P", str(Path(__file__).resolve()), "--one"]
    else:
        command = [sys.executable, "-m", "benchmarks.bench_auto_convert", "--one"]
    out = subprocess.run(
        [*command, json.dumps(spec)], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    expected_wheel = impl == "wheel"
    assert ("rust-datago" in result["loader_file"]) == expected_wheel, result["loader_file"]
    assert result["samples"] == spec["config"]["limit"], result
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--sets", default="lowres,jpg")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="a third of the images, 1 run")
    args = parser.parse_args()
    if args.one:
        measure_one(json.loads(args.one))
        return
    from benchmarks.datasets import prepare_images

    sizes = {"lowres": 1000, "jpg": 300, "png": 60}
    impls = ["ours", "wheel"] if WHEEL_PYTHON.exists() else ["ours"]
    repeat = 1 if args.quick else args.repeat
    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for round_ in range(repeat):
        for name in args.sets.split(","):
            count = sizes[name] // (3 if args.quick else 1)
            folder = prepare_images(name, count).folder
            config = {
                "source_type": "file",
                "source_config": {"root_path": str(folder)},
                "limit": count,
                "samples_buffer_size": 256,
                "prefetch_buffer_size": 256,
            }
            for way in WAYS:
                order = impls if round_ % 2 == 0 else impls[::-1]
                for impl in order:
                    spec = {"config": config, "way": way}
                    results.setdefault((name, way, impl), []).append(run(impl, spec))
    print(f"load average at the end: {os.getloadavg()[0]:.2f}; {repeat} run(s) each, median")
    print(
        "| set | hand-over | ours img/s | wheel img/s | ours / wheel | ours consumer µs/img | wheel consumer µs/img |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.sets.split(","):
        for way in WAYS:
            row = [name, way]
            speed = {
                i: _median(results.get((name, way, i)), "images_per_s") for i in ("ours", "wheel")
            }
            cpu = {
                i: _median(results.get((name, way, i)), "consumer_cpu_s", per_sample=True) * 1e6
                for i in ("ours", "wheel")
            }
            ratio = speed["ours"] / speed["wheel"] if speed["wheel"] else float("nan")
            row += [f"{speed['ours']:.0f}", f"{speed['wheel']:.0f}", f"{ratio:.2f}x"]
            row += [f"{cpu['ours']:.0f}", f"{cpu['wheel']:.0f}"]
            print("| " + " | ".join(row) + " |")


def _median(runs: list[dict[str, Any]] | None, key: str, per_sample: bool = False) -> float:
    if not runs:
        return float("nan")
    return float(statistics.median(r[key] / (r["samples"] if per_sample else 1) for r in runs))


if __name__ == "__main__":
    main()
