"""Loader benchmark: ours vs the raw decode limit, torch's DataLoader, DALI, the webdataset
library and Rust datago.

    python -m benchmarks.run [--quick] [--workloads jpg-files-decode,...] [--impls ...]
                             [--repeat 3] [--out benchmarks/results/NAME]

Generates the data sets once (benchmarks/data/, seeded), reads them once to warm the page
cache, serves the shards from 127.0.0.1, then runs every (workload, loader) in its own
process, interleaved over the repetitions. A loader that is not installed (torch on Python
3.12+, Rust datago's or the peers' venv missing) is skipped with a message. Writes NAME.jsonl (one line per run) and NAME.md
(medians, min..max, ratios) and prints the tables. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from benchmarks import report
from benchmarks.context import header, measured_under
from benchmarks.datasets import (
    DATA,
    IMAGE_SETS,
    Prepared,
    prepare_images,
    prepare_shards,
    shard_pattern,
)
from benchmarks.s3serve import BUCKET as S3_BUCKET
from benchmarks.s3serve import MotoServer, moto_command, tree_cpu_s
from benchmarks.serve import StaticServer
from datago.cli import bucket_config
from datago.imaging.buckets import BucketTable

ROOT = Path(__file__).resolve().parent.parent
RUST_PYTHON = Path("/opt/rust-datago/bin/python")
PEER_PYTHON = Path(os.environ.get("DATAGO_BENCH_PEERS", "/opt/datago-peers/bin/python"))
PEER_MODULES = {"dali": "nvidia.dali", "wds": "webdataset", "torch": "torch"}
COUNTS = {
    "full": {"jpg": 300, "lowres": 1000, "png": 60},
    "quick": {"jpg": 100, "lowres": 300, "png": 20},
}
IMAGE_SIZE = 512
THREADS = "2"
BUFFER = 256  # samples_buffer_size and prefetch_buffer_size, as in datago's own benchmarks
CONCURRENT_DOWNLOADS = 4
RUN_TIMEOUT_S = 600


@dataclass(frozen=True)
class Workload:
    """One row of the table: a data set, read as files or as shards over HTTP, and a task."""

    image_set: str
    source: str  # "files" | "wds"
    task: str  # "decode" | "resize"

    @property
    def name(self) -> str:
        return f"{self.image_set}-{self.source}-{self.task}"

    @property
    def impls(self) -> list[str]:
        # The raw limit, torch and DALI read files; over HTTP the webdataset library competes;
        # from S3 (moto) only ours: the Rust wheel reads no S3.
        if self.source == "files":
            return ["raw", "torch", "dali", "rust", "ours"]
        return ["wds", "rust", "ours"] if self.source == "wds" else ["ours"]


WORKLOADS = [
    Workload(image_set, source, task)
    for image_set in ("jpg", "lowres", "png")
    for source in ("files", "wds")
    for task in ("decode", "resize")
] + [Workload("jpg", "s3", task) for task in ("decode", "resize")]


def main() -> None:
    args = parse_args()
    size = "quick" if args.quick else "full"
    python = "py" + "".join(platform.python_version_tuple()[:2])
    stamp = time.strftime("%Y%m%d-%H%M")
    out = args.out or ROOT / "benchmarks" / "results" / f"{stamp}-{size}-{python}"
    out.parent.mkdir(parents=True, exist_ok=True)
    results = out.with_name(out.name + ".jsonl")
    workloads = [w for w in WORKLOADS if not args.workloads or w.name in args.workloads]
    if moto_command() is None and any(w.source == "s3" for w in workloads):
        print("moto_server not installed (pip install 'moto[server]'): no s3 rows", file=sys.stderr)
        workloads = [w for w in workloads if w.source != "s3"]
    impls = [impl for impl in args.impls if installed(impl)]
    data = prepare(workloads, COUNTS[size])
    context = measured_under(ROOT, RUST_PYTHON, PEER_PYTHON)
    with serve_if_needed(workloads, data) as servers, results.open("w") as lines:
        for rep in range(args.repeat or (1 if args.quick else 3)):
            for workload in workloads:
                for row in run_workload(workload, impls, rep, data[workload.name], servers):
                    lines.write(json.dumps(row) + "\n")
                    lines.flush()
    context["load_after"] = os.getloadavg()
    settings = (
        f"2 threads/workers everywhere (DATAGO_MAX_TASKS={THREADS}), samples_buffer_size = "
        f"prefetch_buffer_size = {BUFFER}, concurrent_downloads = {CONCURRENT_DOWNLOADS}, "
        f"resize = buckets of {IMAGE_SIZE}/32, aspect 0.5..2.0"
    )
    markdown = header(context, sys.argv[1:], settings) + report.render(report.load(results))
    out.with_name(out.name + ".md").write_text(markdown + "\n")
    print(markdown)


def installed(impl: str) -> bool:
    """Whether a loader can run here; says why not on stderr."""
    if impl == "rust" and not RUST_PYTHON.exists():
        why = f"{RUST_PYTHON} missing (benchmarks/README.md says how to make it)"
    elif impl == "torch":
        found = importlib.util.find_spec("torch") is not None
        why = "" if found else f"torch is not installed for Python {platform.python_version()}"
    elif impl in ("dali", "wds"):
        check = [str(PEER_PYTHON), "-P", "-c", f"import {PEER_MODULES[impl]}"]
        found = PEER_PYTHON.exists() and subprocess.run(check, capture_output=True).returncode == 0
        why = "" if found else f"{PEER_MODULES[impl]} missing in {PEER_PYTHON} (see README)"
    else:
        return True
    if why:
        print(f"skipping {report.IMPL_NAMES[impl]}: {why}", file=sys.stderr)
    return not why


def run_workload(
    workload: Workload, impls: list[str], rep: int, data: Prepared, servers: Servers
) -> Iterator[dict[str, Any]]:
    """One repetition of every selected loader on a workload, the order rotated per rep;
    a served workload's rows carry the server's CPU seconds (`server_cpu_s`)."""
    order = [impl for impl in workload.impls if impl in impls]
    shift = rep % len(order) if order else 0
    server = {"wds": servers.http_pid, "s3": servers.s3_pid}.get(workload.source)
    for impl in order[shift:] + order[:shift]:
        spec = make_spec(workload, impl, data, servers)
        before = tree_cpu_s(server) if server else 0.0
        row = {**spec, "rep": rep, **measure(spec)}
        if server:
            row["server_cpu_s"] = tree_cpu_s(server) - before
        for key in ("config", "buckets", "files", "urls", "file_buckets", "key_buckets"):
            row.pop(key, None)
        print(progress_line(row), file=sys.stderr)
        yield row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a third of the images, 1 repeat")
    parser.add_argument("--workloads", type=lambda s: s.split(","), help="names, comma-separated")
    parser.add_argument("--impls", type=lambda s: s.split(","), default=list(report.IMPL_NAMES))
    parser.add_argument("--repeat", type=int, help="runs per loader (default 3, quick 1)")
    parser.add_argument("--out", type=Path, help="results path without suffix")
    args = parser.parse_args()
    unknown = set(args.workloads or []) - {w.name for w in WORKLOADS}
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; known: {[w.name for w in WORKLOADS]}")
    if set(args.impls) - set(report.IMPL_NAMES):
        parser.error(f"unknown loaders in {args.impls}; known: {list(report.IMPL_NAMES)}")
    return args


def prepare(workloads: list[Workload], counts: dict[str, int]) -> dict[str, Prepared]:
    """Generate (once) and warm the page cache for every set the workloads read."""
    data = {}
    for workload in workloads:
        images = prepare_images(workload.image_set, counts[workload.image_set])
        data[workload.name] = images if workload.source == "files" else prepare_shards(images)
    for prepared in data.values():
        for path in prepared.files:
            path.read_bytes()
    return data


@dataclass(frozen=True)
class Servers:
    """The loopback servers of a run: nginx (or aiohttp) for `wds`, moto's S3 for `s3`."""

    http_url: str = ""
    http_pid: int = 0
    s3_options: dict[str, str] | None = None
    s3_pid: int = 0


@contextlib.contextmanager
def serve_if_needed(workloads: list[Workload], data: dict[str, Prepared]) -> Iterator[Servers]:
    """The servers the workloads read from; the `s3` shards uploaded to moto first."""
    sources = {workload.source for workload in workloads}
    with contextlib.ExitStack() as stack:
        servers = Servers()
        if "wds" in sources:
            http = stack.enter_context(StaticServer(DATA))
            servers = Servers(http.url, http.pid)
        if "s3" in sources:
            s3 = stack.enter_context(MotoServer())
            shards = {shard for w in workloads if w.source == "s3" for shard in data[w.name].files}
            for shard in sorted(shards):
                s3.put(f"{shard.parent.name}/{shard.name}", shard.read_bytes())
            servers = Servers(servers.http_url, servers.http_pid, s3.storage_options(), s3.pid)
        yield servers


def make_spec(workload: Workload, impl: str, data: Prepared, servers: Servers) -> dict[str, Any]:
    """What one measurement process needs; ours and Rust get the same datago config."""
    if workload.source == "files":
        source: dict[str, Any] = {
            "source_type": "file",
            "source_config": {"root_path": str(data.folder)},
        }
    else:  # the same shards and pattern over HTTP, or in moto's bucket
        served = workload.source == "wds"
        url = f"{servers.http_url if served else 's3://' + S3_BUCKET}/{shard_pattern(data)}"
        source = {
            "source_type": "webdataset",
            "source_config": {
                "url": url,
                "concurrent_downloads": CONCURRENT_DOWNLOADS,
                "reference_image_type": IMAGE_SETS[workload.image_set].suffix,
            },
        }
        if not served:
            source["source_config"]["storage_options"] = servers.s3_options
    config = {
        **source,
        "limit": data.count,
        "samples_buffer_size": BUFFER,
        "prefetch_buffer_size": BUFFER,
    }
    spec = {
        "workload": workload.name,
        "impl": impl,
        "folder": str(data.folder),
        "count": data.count,
        "image_bytes": data.image_bytes,
        "config": config,
        "buckets": None,
    }
    if workload.task == "resize":
        config["image_config"] = bucket_config(IMAGE_SIZE)
        table = BucketTable.build(IMAGE_SIZE, 32, 0.5, 2.0)
        spec["buckets"] = [list(size) for size in table.sizes.values()]
    if impl in ("dali", "wds"):
        spec.update(peer_spec(workload, data, servers.http_url))
    return spec


def peer_spec(workload: Workload, data: Prepared, base_url: str) -> dict[str, Any]:
    """What DALI and the webdataset library need besides: files or shard URLs, and each
    image's bucket (chosen from its size before the timer; ours and Rust choose it inside)."""
    images = prepare_images(workload.image_set, data.count)
    peer: dict[str, Any] = {
        "files": [path.name for path in images.files],
        "suffix": IMAGE_SETS[workload.image_set].suffix,
        "urls": [f"{base_url}/{data.folder.name}/{shard.name}" for shard in data.files],
    }
    if workload.task == "resize":
        table = BucketTable.build(IMAGE_SIZE, 32, 0.5, 2.0)
        chosen = []
        for path in images.files:
            with Image.open(path) as image:
                chosen.append(list(table.choose(*image.size)))
        peer["file_buckets"] = chosen
        peer["key_buckets"] = {
            path.stem: bucket for path, bucket in zip(images.files, chosen, strict=True)
        }
    return peer


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh process; its JSON line, or an `error`."""
    env = {**os.environ, "DATAGO_MAX_TASKS": THREADS}
    if spec["impl"] == "rust":  # its own venv: our package must not shadow the wheel
        env.pop("PYTHONPATH", None)
        command = [str(RUST_PYTHON), "-P", "benchmarks/rust_measure.py", json.dumps(spec)]
    elif spec["impl"] in ("dali", "wds"):  # the peers' venv
        env.pop("PYTHONPATH", None)
        command = [str(PEER_PYTHON), "-P", "benchmarks/peer_measure.py", json.dumps(spec)]
    else:
        command = [sys.executable, "-m", "benchmarks.measure", json.dumps(spec)]
    try:
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {RUN_TIMEOUT_S}s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def progress_line(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['workload']:22} {row['impl']:6} FAILED: {row['error']}"
    return (
        f"{row['workload']:22} {row['impl']:6} rep {row['rep']}: {row['images_per_s']:7.1f} img/s "
        f"({row['samples']} in {row['wall_s']:.2f}s)"
    )


if __name__ == "__main__":
    main()
