"""ONE loopback HTTP server for tests: an aiohttp app on 127.0.0.1, a request log, fault hooks.

`async with Server(app) as server` runs on the test's event loop; `with Server(app) as server`
runs on its own loop in a thread (named `loopback-server...`), for tests that block in a sync
client. `Server.files` serves bytes by name with Range support. Every request is logged
(`Server.requests`: path, headers, status, body bytes sent, fault); `Server.fault`, a `Rule`,
breaks the requests it picks (see `tests.helpers.faults`).
"""

from __future__ import annotations

import asyncio
import math
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from tests.helpers.faults import Fault, Rule, answer

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass
class Logged:
    """One request as the server saw it, and what it sent back."""

    index: int
    """Its place among every request the server saw."""
    attempt: int
    """How many requests for the same path and query came before it."""
    method: str
    url: URL
    """The whole URL asked, host included."""
    path: str
    path_qs: str
    """The path and query as sent."""
    query: dict[str, str]
    headers: CIMultiDict[str]
    peer: Any
    """The client's (address, port): one per connection."""
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None
    """None while the server is still answering."""
    status: int | None = None
    """The status sent; None when none was (a reset or a hang before the headers)."""
    sent: int = 0
    """Body bytes written to the connection."""
    fault: Fault | None = None

    @property
    def name(self) -> str:
        """The path without its leading slash: the file's name on a `Server.files`."""
        return self.path.removeprefix("/")

    @property
    def range(self) -> str | None:
        return self.headers.get("Range")

    @property
    def range_start(self) -> int:
        """The first byte asked for by an open `Range: bytes=N-` header; 0 without one."""
        match = _RANGE.fullmatch(self.range or "")
        return int(match[1]) if match and match[1] else 0

    @property
    def authorization(self) -> str | None:
        return self.headers.get("Authorization")


class Server:
    """An aiohttp app on 127.0.0.1 that logs every request and breaks those `fault` picks."""

    def __init__(self, app: web.Application, fault: Rule | None = None) -> None:
        self.app = app
        self.fault = fault
        """Consulted for every request; may be replaced while the server runs."""
        self.requests: list[Logged] = []
        self.url = ""
        """`http://127.0.0.1:PORT/` once started."""
        app.middlewares.insert(0, self._log_and_break)
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._io: ThreadPoolExecutor | None = None

    @classmethod
    def files(
        cls, files: Mapping[str, bytes], *, ranges: bool = True, fault: Rule | None = None
    ) -> Server:
        """Serves `files[name]` at `/name` (404 if absent), honouring `Range` unless `ranges`
        is False (then every answer is a 200 of the whole file)."""
        return cls(files_app(files, ranges=ranges), fault)

    @classmethod
    def handler(cls, handle: Handler, fault: Rule | None = None) -> Server:
        """Answers every GET with `handle`."""
        app = web.Application()
        app.router.add_get("/{path:.*}", handle)
        return cls(app, fault)

    @web.middleware
    async def _log_and_break(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        seen = Logged(
            index=len(self.requests),
            attempt=0,
            method=request.method,
            url=request.url,
            path=request.path,
            path_qs=request.path_qs,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            peer=request.transport.get_extra_info("peername") if request.transport else None,
        )
        seen.attempt = sum(1 for earlier in self.requests if earlier.path_qs == seen.path_qs)
        self.requests.append(seen)
        try:
            seen.fault = self.fault(seen) if self.fault is not None else None
            return await answer(request, handler, seen.fault, seen)
        finally:
            seen.ended = time.monotonic()

    # -- what the log says ------------------------------------------------------------------

    def per_name(self) -> Counter[str]:
        """Requests per path, without its leading slash (per file name on `Server.files`)."""
        return Counter(seen.name for seen in self.requests)

    def sent(self, name: str | None = None) -> int:
        """Body bytes sent in all, or for the path `name` (without its leading slash)."""
        return sum(seen.sent for seen in self.requests if name is None or seen.name == name)

    def in_flight(self, prefix: str = "/") -> int:
        """Requests whose path starts with `prefix` that are still being answered."""
        return sum(1 for s in self.requests if s.ended is None and s.path.startswith(prefix))

    async def settle(self, quiet_s: float = 0.1) -> None:
        """Wait (on the server's own loop) until every request is answered and none came for
        `quiet_s`: a closed client's last requests are logged before the log is read."""
        count = -1
        while count != len(self.requests) or self.in_flight():
            count = len(self.requests)
            await asyncio.sleep(quiet_s)

    def most_at_once(self, prefix: str = "/") -> int:
        """The most requests whose path starts with `prefix` that were answered at once."""
        chosen = [seen for seen in self.requests if seen.path.startswith(prefix)]
        events = sorted(
            [(seen.started, 1) for seen in chosen]
            + [(math.inf if seen.ended is None else seen.ended, -1) for seen in chosen]
        )  # at a tie an end comes first: back to back is not at once
        most = now = 0
        for _, step in events:
            now += step
            most = max(most, now)
        return most

    # -- running ------------------------------------------------------------------------------

    async def start(self) -> None:
        self._runner = web.AppRunner(
            self.app, handler_cancellation=True, access_log=None, shutdown_timeout=0.5
        )
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __enter__(self) -> Self:
        loop = self._loop = asyncio.new_event_loop()
        # Named, so that the app's file-reading threads are not taken for the client's.
        self._io = ThreadPoolExecutor(4, thread_name_prefix="loopback-server-io")
        loop.set_default_executor(self._io)
        self._thread = threading.Thread(target=loop.run_forever, name="loopback-server")
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(10)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._loop is not None and self._thread is not None and self._io is not None
        try:
            asyncio.run_coroutine_threadsafe(self.close(), self._loop).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            self._io.shutdown()


def files_app(files: Mapping[str, bytes], *, ranges: bool = True) -> web.Application:
    """An app serving `files` by name, with single `Range` requests when `ranges`."""

    async def handle(request: web.Request) -> web.Response:
        data = files.get(request.match_info["name"])
        if data is None:
            return web.Response(status=404)
        asked = request.headers.get("Range")
        if not ranges:
            return web.Response(body=data)
        headers = {"Accept-Ranges": "bytes"}
        if asked is None:
            return web.Response(body=data, headers=headers)
        span = byte_range(asked, len(data))
        if span is None:
            headers["Content-Range"] = f"bytes */{len(data)}"
            return web.Response(status=416, headers=headers)
        start, stop = span
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
        return web.Response(status=206, body=data[start:stop], headers=headers)

    app = web.Application()
    app.router.add_get("/{name:.*}", handle)
    return app


def byte_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, stop) of a `bytes=A-B`, `bytes=A-` or `bytes=-N` header; None if unsatisfiable."""
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1, 2) == ("", ""):
        return None
    first, last = match.groups()
    if not first:
        start, stop = max(size - int(last), 0), size
    else:
        start, stop = int(first), min(int(last) + 1, size) if last else size
    return (start, stop) if start < stop else None


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for a while): for a refused connection,
    or for a server started by another process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
