"""What a result was measured under: machine, versions, commit and load; the report header."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from benchmarks.serve import server_kind

PACKAGES = (
    "datago-py", "Pillow", "simplejpeg", "cykooz-resizer", "imagecodecs", "numpy", "torch"
)  # fmt: skip


def measured_under(root: Path, rust_python: Path) -> dict[str, Any]:
    """The context a reader needs to judge the numbers; `load_after` is added at the end."""
    rust = "not installed"
    if rust_python.exists():
        rust = subprocess.run(
            [str(rust_python), "-P", "-c", "import importlib.metadata as m; print(m.version('datago'))"],
            capture_output=True, text=True, cwd="/", check=False,
        ).stdout.strip()  # fmt: skip
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=root
    ).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit or "unknown (not a git checkout)",
        "machine": f"{os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}",
        "versions": ", ".join(f"{name} {version(name)}" for name in PACKAGES)
        + f", Rust datago {rust}",
        "server": server_kind(),
        "load_before": os.getloadavg(),
    }


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
            f"- HTTP server for the wds rows: {context['server']} on 127.0.0.1",
            f"- settings: {settings}",
            "- img/s: median over runs (min..max); ratios compare medians; machine busy: cores",
            "  the whole machine used during a run (this loader, the server and anything else)",
            "",
            "",
        ]
    )
