"""Peak RSS of ours and the Rust wheel on big photos with a slow consumer, side by side.

    python -m benchmarks.memory [--threads 2,8,16] [--budgets 0,256] [--images 32] [--take 20]
                                [--baseline DIR]

12 MP JPEGs (4000x3000, 36 MB decoded), `samples_buffer_size` 4, `prefetch_buffer_size` 4, a
consumer that takes a sample every `--every` seconds (0.5) and keeps only the latest array.
Each row is a fresh process (`DATAGO_MAX_TASKS` = the thread count); it reports its RSS before
the client starts (idle), its peak RSS (`VmHWM`) and the difference. For ours, `--budgets`
gives `max_buffer_bytes` values in MB (0: the default) and the engine's own peak byte count.
The child runs with `-P` from /, so the Rust venv imports its own `datago`. `--baseline DIR`
adds rows of another checkout of ours (`git archive main | tar -x -C DIR`), run with
`PYTHONPATH=DIR`, for before/after figures in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUST_PYTHON = Path("/opt/rust-datago/bin/python")
DATA = ROOT / "benchmarks" / "data" / "memory-12mp"
SIZES = [(4000, 3000), (3000, 4000)]
BUFFERS = 4
MB = 1e6


def child(spec: dict[str, Any]) -> None:
    """One measurement, in this process: only the standard library, numpy and `datago`."""
    import numpy as np

    import datago

    idle = _rss()
    client = datago.DatagoClient(json.dumps(spec["config"]))
    peak_engine = 0
    latest = None
    start = time.perf_counter()
    for _ in range(spec["take"]):
        time.sleep(spec["every"])
        sample = client.get_sample()
        if sample is None:
            break
        latest = np.asarray(sample.image.to_numpy_array())
        latest[::64].sum()  # read it, as a training step would
        peak_engine = max(
            peak_engine, getattr(getattr(client, "stats", None), "peak_bytes_held", 0)
        )
    result = {
        "idle_mb": idle / MB,
        "peak_mb": _peak_rss() / MB,
        "engine_peak_mb": peak_engine / MB,
        "seconds": time.perf_counter() - start,
        "shape": None if latest is None else list(latest.shape),
        "loader_file": datago.__file__,
    }
    print(json.dumps(result), flush=True)
    os._exit(0)  # measured: no need to wait for the loader's threads to drain


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run_one(impl: str, threads: int, budget_mb: int, args: argparse.Namespace) -> dict[str, Any]:
    """One fresh process; its result line, or an `error`."""
    config: dict[str, Any] = {
        "source_type": "file",
        "source_config": {"root_path": str(DATA)},
        "limit": args.images,
        "samples_buffer_size": BUFFERS,
        "prefetch_buffer_size": BUFFERS,
    }
    if budget_mb:
        config["max_buffer_bytes"] = budget_mb * 1_000_000
    spec = {"config": config, "take": args.take, "every": args.every}
    python = RUST_PYTHON if impl == "rust" else Path(sys.executable)
    env = {**os.environ, "DATAGO_MAX_TASKS": str(threads)}
    env.pop("PYTHONPATH", None)
    if impl == "baseline":
        env["PYTHONPATH"] = str(args.baseline)
    command = [str(python), "-P", str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    done = subprocess.run(command, cwd="/", env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--threads", default="2,8,16")
    parser.add_argument("--budgets", default="0,256", help="max_buffer_bytes in MB; 0: default")
    parser.add_argument("--impls", default="rust,ours")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--take", type=int, default=20)
    parser.add_argument("--every", type=float, default=0.5)
    parser.add_argument("--baseline", type=Path, help="another checkout of ours to compare")
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    sys.path.insert(0, str(ROOT))
    from datago.demo import write_photos

    write_photos(DATA, args.images, sizes=SIZES)
    print(f"load average before: {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(
        "| loader | threads | budget | idle MB | peak RSS MB | above idle MB | engine peak MB "
        "| peak / wheel's |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for threads in map(int, args.threads.split(",")):
        wheel = 0.0
        impls = args.impls.split(",") + (["baseline"] if args.baseline else [])
        for impl in impls:
            budgets = [int(b) for b in args.budgets.split(",")] if impl == "ours" else [0]
            for budget in budgets:
                row = run_one(impl, threads, budget, args)
                label = f"{budget} MB" if budget else "default"
                if "error" in row:
                    print(
                        f"| {impl} | {threads} | {label} | FAILED: {row['error']} |||", flush=True
                    )
                    continue
                engine = f"{row['engine_peak_mb']:.0f}" if impl == "ours" else "-"
                wheel = row["peak_mb"] if impl == "rust" else wheel
                ratio = f"{row['peak_mb'] / wheel:.2f}x" if wheel and impl != "rust" else "-"
                print(
                    f"| {impl} | {threads} | {label if impl == 'ours' else '-'} "
                    f"| {row['idle_mb']:.0f} | {row['peak_mb']:.0f} "
                    f"| {row['peak_mb'] - row['idle_mb']:.0f} | {engine} | {ratio} |",
                    flush=True,
                )
    print(f"load average after: {'/'.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
