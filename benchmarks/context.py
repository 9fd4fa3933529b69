"""What a result was measured under: machine, versions, commit and load; the report header."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from benchmarks.serve import server_kind

PACKAGES = (
    "datago-py", "Pillow", "simplejpeg", "cykooz-resizer", "imagecodecs", "image-rs", "numpy",
    "torch",
)  # fmt: skip
PEER_PACKAGES = ("nvidia-dali-cuda120", "webdataset", "torch")


def measured_under(root: Path, rust_python: Path, peer_python: Path) -> dict[str, Any]:
    """The context a reader needs to judge the numbers; `load_after` is added at the end."""
    rust = ", ".join(_versions_in(rust_python, ("datago",)))
    peers = ", ".join(_versions_in(peer_python, PEER_PACKAGES))
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=root
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit or "unknown (not a git checkout)",
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}",
        "versions": ", ".join(f"{name} {_version(name)}" for name in PACKAGES)
        + f"; Rust datago venv: {rust}; peers venv: {peers}",
        "server": server_kind(),
        "load_before": os.getloadavg(),
    }


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def _versions_in(python: Path, packages: tuple[str, ...]) -> list[str]:
    """`name version` of each package in another venv (run from / so that ours is not seen)."""
    if not python.exists():
        return [f"{python} missing"]
    script = (
        "import importlib.metadata as m\n"
        f"for p in {packages!r}:\n"
        "    try: print(p, m.version(p))\n"
        "    except m.PackageNotFoundError: print(p, 'not installed')"
    )
    done = subprocess.run(
        [str(python), "-P", "-c", script], capture_output=True, text=True, cwd="/", check=False
    )
    return done.stdout.strip().splitlines()


def header(context: dict[str, Any], argv: list[str], settings: str) -> str:
    """The markdown lines above the tables."""
    load = "/".join(f"{v:.1f}" for v in context["load_before"])
    load_after = "/".join(f"{v:.1f}" for v in context["load_after"])
    return "\n".join(
        [
            f"# Loader benchmark, {context['date']}",
            "",
            f"- command: `python -m benchmarks.run {' '.join(argv)}` at commit {context['commit']}",
            f"- machine: {context['machine']}; load average (1/5/15 min) {load} before, "
            f"{load_after} after",
            f"- versions: {context['versions']}",
            f"- HTTP server for the wds rows: {context['server']} on 127.0.0.1; S3 for the s3 "
            "rows: moto_server (Python) on 127.0.0.1; `server CPU`: their CPU per image",
            f"- settings: {settings}",
            "- img/s: median over runs (min..max); ratios compare medians; machine busy: cores",
            "  the whole machine used during a run (this loader, the server and anything else)",
            "",
            "",
        ]
    )
