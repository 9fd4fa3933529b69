"""moto's S3 server on 127.0.0.1 for the `*-s3-*` rows, and the CPU a server process tree used.

moto (`pip install 'moto[server]'`, in the `test` extra) is a Python server: on a small
machine it may cost more CPU than the loader, so the runs report its CPU beside ours.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from benchmarks.serve import ServerProcess

BUCKET = "bench"
REGION = "us-east-1"
KEYS = {"access_key_id": "bench", "secret_access_key": "bench"}  # moto checks none


def moto_command() -> str | None:
    """The `moto_server` next to this Python, or on PATH; None when moto is not installed."""
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.exists() else shutil.which("moto_server")


class MotoServer(ServerProcess):
    """moto's S3 server with bucket `BUCKET` while the `with` block runs; `put` uploads."""

    def __init__(self) -> None:
        command = moto_command()
        if command is None:
            raise RuntimeError("moto_server not found: pip install 'moto[server]'")
        super().__init__()
        self.command = command
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def storage_options(self) -> dict[str, str]:
        return {"endpoint": self.endpoint, "region": REGION, **KEYS}

    def put(self, key: str, data: bytes) -> None:
        """A new object, by an unsigned PUT (moto accepts it for a new key)."""
        headers = {"Content-Type": "application/octet-stream"}
        url = f"{self.endpoint}/{BUCKET}/{key}"
        urllib.request.urlopen(urllib.request.Request(url, data, headers, method="PUT"))

    def __enter__(self) -> MotoServer:
        command = [self.command, "-H", "127.0.0.1", "-p", str(self.port)]
        self._start(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        request = urllib.request.Request(f"{self.endpoint}/{BUCKET}", method="PUT")
        urllib.request.urlopen(request)
        return self


def tree_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its live children (nginx's workers)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            kids = [int(child) for child in children.read().split()]
    except OSError:
        return 0.0
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(tree_cpu_s(kid) for kid in kids)
