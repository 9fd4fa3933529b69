"""A static file server on 127.0.0.1 for the webdataset runs: nginx when installed, else aiohttp.

nginx (1 worker, sendfile, no access log) costs the least CPU, which matters on 2 cores.
`python -m benchmarks.serve ROOT PORT` is the aiohttp fallback.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


class ServerProcess:
    """A server in a child process on a free port of 127.0.0.1, stopped when `with` ends."""

    def __init__(self) -> None:
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The server's process (nginx's master: its worker is a child)."""
        assert self._process is not None
        return self._process.pid

    def _start(self, command: list[str], **popen: Any) -> None:
        """Run `command` and wait until it listens on `port`."""
        self._process = subprocess.Popen(command, **popen)
        _wait_for_port(self.port, self._process)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)


class StaticServer(ServerProcess):
    """Serves `root` at `http://127.0.0.1:<port>/` while the `with` block runs."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = root.resolve()
        self.kind = server_kind()
        self._tmp = tempfile.TemporaryDirectory(prefix="datago-bench-serve-")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> StaticServer:
        if self.kind == "nginx":
            conf = Path(self._tmp.name) / "nginx.conf"
            conf.write_text(NGINX_CONF.format(tmp=self._tmp.name, port=self.port, root=self.root))
            command = ["nginx", "-c", str(conf), "-p", self._tmp.name]
        else:
            command = [sys.executable, "-m", "benchmarks.serve", str(self.root), str(self.port)]
        self._start(command, stderr=subprocess.DEVNULL)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        super().__exit__(exc_type, exc, traceback)
        self._tmp.cleanup()


def server_kind() -> str:
    """What `StaticServer` will run here."""
    return "nginx" if shutil.which("nginx") else "aiohttp"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the file server exited with code {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the file server did not listen on port {port} within 10s")


def main() -> None:
    root, port = Path(sys.argv[1]), int(sys.argv[2])
    app = web.Application()
    app.router.add_static("/", root)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    main()
