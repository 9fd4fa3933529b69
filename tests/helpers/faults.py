"""What a loopback `Server` does to a request instead of answering it plainly, and how it sends.

A `Rule` looks at each request as logged (`Logged`: path, query, headers, attempt) and returns a
`Fault` or None; `always`, `first` and `script` build the common ones, a test writes its own.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from aiohttp import web
from multidict import CIMultiDict

if TYPE_CHECKING:
    from tests.helpers.servers import Logged

CHUNK = 256 << 10  # bytes per write: a cut or a stall lands between writes of the body


@dataclass(frozen=True)
class Fault:
    """How to break one answer; build it with the class methods, or combine fields by hand."""

    name: str
    """What the request log calls it."""
    delay_s: float = 0.0
    """Wait this long before anything else."""
    status: int | None = None
    """Answer this status with `body` instead of the app's answer."""
    body: bytes = b"injected"
    headers: Mapping[str, str] = field(default_factory=dict)
    """Sent with `status` (a `Retry-After`, say)."""
    rewrite: Callable[[bytes], bytes] | None = None
    """Send `rewrite(body)` instead of the app's body."""
    at: float | None = None
    """Body bytes sent before `then` (a float below 1: that fraction of the body); None: before
    the status line. A body no longer than `at` is sent whole."""
    then: Literal["", "close", "rst", "hang"] = ""
    """"close" the connection, reset it with an "rst", or "hang": send nothing more until the
    client hangs up (10 s at most)."""
    trickle_s: float = 0.0
    """Send the body one byte at a time, this far apart."""
    tail: int = 0
    """Send the last `tail` bytes of the body after a pause of `tail_pause_s`."""
    tail_pause_s: float = 0.05

    @classmethod
    def error(cls, status: int, body: bytes = b"injected", **headers: str) -> Fault:
        """Answer `status` with `body` and `headers` (`Retry_After="2"`: `_` for `-`)."""
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        return cls(str(status), status=status, body=body, headers=named)

    @classmethod
    def reset(cls, rst: bool = False) -> Fault:
        """Close the connection before any answer (with an RST rather than a FIN when `rst`)."""
        return cls("rst" if rst else "reset", then="rst" if rst else "close")

    @classmethod
    def hang(cls) -> Fault:
        """Send no answer at all, until the client hangs up."""
        return cls("hang", then="hang")

    @classmethod
    def cut(cls, at: float, rst: bool = False) -> Fault:
        """Send the status, headers and `at` body bytes, then close the connection."""
        return cls("cut", at=at, then="rst" if rst else "close")

    @classmethod
    def stall(cls, at: float) -> Fault:
        """Send the status, headers and `at` body bytes, then nothing until the client hangs up."""
        return cls("stall", at=at, then="hang")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer normally after `seconds`."""
        return cls("delay", delay_s=seconds)

    @classmethod
    def trickle(cls, seconds: float) -> Fault:
        """Send the body a byte every `seconds`: never idle long, never done in time."""
        return cls("trickle", trickle_s=seconds)

    @classmethod
    def slow_tail(cls, size: int, pause_s: float = 0.05) -> Fault:
        """Send the last `size` bytes of the body `pause_s` after the rest."""
        return cls("slow tail", tail=size, tail_pause_s=pause_s)

    @classmethod
    def change(cls, rewrite: Callable[[bytes], bytes]) -> Fault:
        """Send `rewrite(body)` instead of the app's body."""
        return cls("rewrite", rewrite=rewrite)


Rule = Callable[["Logged"], Fault | None]
"""The fault for a request (its log entry so far), or None for a plain answer."""


def always(fault: Fault, names: Collection[str] | None = None) -> Rule:
    """Every request (of the paths `names`, without their leading slash) gets `fault`."""
    return lambda seen: fault if names is None or seen.name in names else None


def first(count: int, fault: Fault, names: Collection[str] | None = None) -> Rule:
    """The first `count` requests of each path (of `names` only, when given) get `fault`."""
    return lambda seen: (
        fault if seen.attempt < count and (names is None or seen.name in names) else None
    )


def script(*steps: Fault | None) -> Rule:
    """The n-th request the server sees gets `steps[n]`; those after the last step, none."""
    return lambda seen: steps[seen.index] if seen.index < len(steps) else None


async def until_hung_up(request: web.Request, longest_s: float = 10.0) -> None:
    """A stall: wait until the client gives up and closes the connection."""
    deadline = time.monotonic() + longest_s
    while time.monotonic() < deadline:
        if request.transport is None or request.transport.is_closing():
            return
        await asyncio.sleep(0.02)


async def _break(request: web.Request, then: str) -> None:
    if then == "hang":
        await until_hung_up(request)
    transport = request.transport
    if transport is None:
        return
    if then == "rst":
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()  # with linger 0: an RST, not a FIN
    else:
        transport.close()


async def answer(
    request: web.Request,
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    fault: Fault | None,
    seen: Logged,
) -> web.StreamResponse:
    """The app's answer (or the fault's status), sent as `fault` says; `seen` records it."""
    fault = fault or Fault("")
    await asyncio.sleep(fault.delay_s)
    if fault.then and fault.at is None:
        await _break(request, fault.then)
        return web.Response(text="never sent")
    headers: CIMultiDict[str] = CIMultiDict()
    if fault.status is not None:
        status, body, headers = fault.status, fault.body, CIMultiDict(fault.headers)
    else:
        try:
            plain = await handler(request)
        except web.HTTPException as exc:
            seen.status = exc.status
            raise
        if not isinstance(plain, web.Response) or not isinstance(plain.body, bytes):
            seen.status = plain.status  # streamed by the app itself: not counted in `sent`
            return plain
        status, body, headers = plain.status, plain.body, CIMultiDict(plain.headers)
    if fault.rewrite is not None:
        body = fault.rewrite(body)
    headers.popall("Content-Length", None)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = len(body)
    await response.prepare(request)
    seen.status = status
    if request.method == "HEAD":
        return response
    at = fault.at if fault.at is None or fault.at >= 1 else fault.at * len(body)
    cut = int(at) if at is not None and at < len(body) else None
    try:
        if fault.trickle_s:
            for byte in body:
                if request.transport is None or request.transport.is_closing():
                    break
                await response.write(bytes([byte]))
                seen.sent += 1
                await asyncio.sleep(fault.trickle_s)
            return response
        end = len(body) if cut is None else cut
        head = end - (min(fault.tail, end) if cut is None else 0)
        for start in range(0, head, CHUNK):
            chunk = body[start : min(head, start + CHUNK)]
            await response.write(chunk)
            seen.sent += len(chunk)
        if cut is not None:
            await _break(request, fault.then)
            return response
        if head < end:
            await asyncio.sleep(fault.tail_pause_s)
            await response.write(body[head:end])
            seen.sent += end - head
        await response.write_eof()
    except ConnectionError:  # the client hung up
        pass
    return response
