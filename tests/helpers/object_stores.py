"""Object stores on loopback for tests: moto's S3 server, a fault-injecting proxy, Azurite.

`moto_s3()` runs moto's real S3 server (`ThreadedMotoServer`) on 127.0.0.1 in a thread;
`S3Proxy` forwards every request to it from its own port, logs each one (`S3Proxy.requests`,
with the body bytes sent) and breaks the ones its `fault` rule picks: an error status with
headers, or a body cut short; `proxy_in_thread` runs one for blocking tests.
`azurite()` runs Azure's storage emulator (npm `azurite`) when it is installed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Self
from urllib.parse import parse_qs, quote, urlencode

import aiohttp
from aiohttp import web
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer

from tests.helpers.servers import free_port

KEYS = {"access_key_id": "testing-key", "secret_access_key": "testing-secret"}
"""Credentials moto accepts (it checks none); tests look for the key id in signatures."""
AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_METADATA_ENDPOINT",
)
"""Variables obstore reads from the process: tests clear them (a developer's AWS setup)."""
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass
class MotoS3:
    """moto's S3 server at `endpoint` (`http://127.0.0.1:PORT`)."""

    endpoint: str

    def create_bucket(self, bucket: str, public: bool = False) -> None:
        """A bucket; a `public` one lets anyone list and read (unsigned requests)."""
        headers = {"x-amz-acl": "public-read"} if public else {}
        request = urllib.request.Request(f"{self.endpoint}/{bucket}", headers=headers, method="PUT")
        urllib.request.urlopen(request)

    def put(self, bucket: str, key: str, body: bytes, public: bool = False) -> None:
        """Store a new object through the server's HTTP API (moto refuses unsigned overwrites)."""
        headers = {"Content-Type": "application/octet-stream"}  # not a form: moto would parse it
        if public:
            headers["x-amz-acl"] = "public-read"
        request = urllib.request.Request(
            f"{self.endpoint}/{bucket}/{quote(key)}", body, headers, method="PUT"
        )
        urllib.request.urlopen(request)

    def put_many(self, bucket: str, keys: list[str], body: bytes = b"x") -> None:
        """Store (or overwrite) objects straight into the running server's state (HTTP is slow)."""
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
        for key in keys:
            backend.put_object(bucket, key, body)


@contextmanager
def moto_s3() -> Iterator[MotoS3]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield MotoS3(f"http://{host}:{port}")
    finally:
        server.stop()


@dataclass
class Seen:
    """One request the proxy received, and what it did with it."""

    method: str
    path_qs: str
    headers: dict[str, str]
    status: int | None = None
    fault: str = ""
    sent: int = 0  # body bytes forwarded to the client
    started: float = field(default_factory=time.monotonic)  # when it arrived

    @property
    def path(self) -> str:
        """The path as sent, without the query (a presigned URL's signature)."""
        return self.path_qs.partition("?")[0]

    @property
    def credential(self) -> str | None:
        """The key id and scope that signed the request, in its header or its presigned query;
        None for an unsigned request."""
        signed = re.search(r"Credential=([^,]+)", self.headers.get("Authorization", ""))
        if signed:
            return signed[1]
        query = parse_qs(self.path_qs.partition("?")[2])
        presigned = query.get("X-Amz-Credential") or query.get("X-Goog-Credential")
        return presigned[0] if presigned else None

    @property
    def range_start(self) -> int:
        """N of a `Range: bytes=N-` header; 0 without one."""
        value = self.headers.get("Range", "bytes=0-")
        return int(value.removeprefix("bytes=").partition("-")[0] or 0)


@dataclass
class Fault:
    """What the proxy does instead of forwarding a request's answer as it is."""

    status: int | None = None  # answer this status with `body` and `headers`
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None  # forward the answer but close after this many body bytes
    before: Callable[[], None] | None = None  # run first (change the object, say)


Rule = Callable[[Seen], Fault | None]


def s3_error(status: int, code: str, **headers: str) -> Fault:
    """An S3-style XML error answer."""
    body = f"<?xml version='1.0'?><Error><Code>{code}</Code><Message>{code}</Message></Error>"
    return Fault(
        status=status, body=body.encode(), headers={"Content-Type": "application/xml"} | headers
    )


def first(count: int, fault: Fault, method: str = "GET") -> Rule:
    """`fault` for the first `count` requests of `method`, then plain forwarding."""
    left = [count]

    def rule(seen: Seen) -> Fault | None:
        if seen.method != method or left[0] == 0:
            return None
        left[0] -= 1
        return fault

    return rule


class S3Proxy:
    """A loopback aiohttp server forwarding to `upstream`, logging and breaking requests."""

    def __init__(self, upstream: str, fault: Rule | None = None) -> None:
        self.upstream = upstream
        self.fault = fault
        self.requests: list[Seen] = []
        self.endpoint = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.endpoint = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession(auto_decompress=False)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None and self._session is not None
        await self._session.close()
        await self._runner.cleanup()

    def of(self, method: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.method == method]

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        seen = Seen(request.method, request.path_qs, dict(request.headers))
        self.requests.append(seen)
        fault = self.fault(seen) if self.fault else None
        if fault and fault.before:
            fault.before()
        if fault and fault.status is not None:
            seen.status, seen.fault = fault.status, str(fault.status)
            return web.Response(status=fault.status, body=fault.body, headers=fault.headers)
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=await request.read(),
        ) as upstream:
            seen.status = upstream.status
            response = web.StreamResponse(status=upstream.status)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    response.headers[name] = value
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            sent = 0
            async for chunk in upstream.content.iter_chunked(64 << 10):
                if fault and fault.cut_after is not None and sent + len(chunk) > fault.cut_after:
                    await response.write(chunk[: fault.cut_after - sent])
                    seen.sent += fault.cut_after - sent
                    await asyncio.sleep(0.05)  # let the bytes leave before the cut
                    seen.fault = f"cut at {fault.cut_after}"
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write(chunk)
                sent += len(chunk)
                seen.sent += len(chunk)
            await response.write_eof()
            return response


@contextmanager
def proxy_in_thread(upstream: str, fault: Rule | None = None) -> Iterator[S3Proxy]:
    """An `S3Proxy` serving from its own thread and loop, for tests that block (a client)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="s3-proxy", daemon=True)
    thread.start()
    proxy = S3Proxy(upstream, fault)
    asyncio.run_coroutine_threadsafe(proxy.__aenter__(), loop).result(10)
    try:
        yield proxy
    finally:
        asyncio.run_coroutine_threadsafe(proxy.__aexit__(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
"""Azurite's well-known development account and key."""


def azurite_command() -> str | None:
    """The `azurite-blob` executable: `$AZURITE_BLOB`, else on PATH; None if absent."""
    return os.environ.get("AZURITE_BLOB") or shutil.which("azurite-blob")


@dataclass
class Azurite:
    """Azurite's blob service; `endpoint` is the account's URL."""

    endpoint: str

    def create_container(self, container: str) -> None:
        self._signed("PUT", f"/{container}", {"restype": "container"})

    def put(self, container: str, key: str, body: bytes) -> None:
        headers = {"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"}
        self._signed("PUT", f"/{container}/{quote(key)}", {}, body, headers)

    def _signed(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> None:
        """A request signed with the account key (Shared Key, as Azurite checks it)."""
        headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": "2021-08-06"} | (
            headers or {}
        )
        fields = ["", "", str(len(body)) if body else "", "", headers.get("Content-Type", "")]
        canonical_headers = "".join(
            f"{name}:{value}\n"
            for name, value in sorted(headers.items())
            if name.startswith("x-ms-")
        )
        resource = f"/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}{path}" + "".join(
            f"\n{name}:{value}" for name, value in sorted(query.items())
        )
        to_sign = "\n".join([method, *fields, *[""] * 6]) + "\n" + canonical_headers + resource
        key = base64.b64decode(AZURITE_KEY)
        signature = base64.b64encode(hmac.new(key, to_sign.encode(), hashlib.sha256).digest())
        headers["Authorization"] = f"SharedKey {AZURITE_ACCOUNT}:{signature.decode()}"
        url = f"{self.endpoint}{path}" + ("?" + urlencode(query) if query else "")
        request = urllib.request.Request(url, body or None, headers, method=method)
        urllib.request.urlopen(request)


@contextmanager
def azurite(command: str, folder: str) -> Iterator[Azurite]:
    """Azurite's blob service on 127.0.0.1, in memory (run in `folder`), stopped on exit."""
    options = ["--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--silent"]
    process = subprocess.Popen(
        [command, "--blobHost", "127.0.0.1", "--blobPort", str(free_port()), *options],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # "... successfully listens on http://127.0.0.1:PORT"
            if match := re.search(r"listens on (http://127\.0\.0\.1:\d+)", line):
                yield Azurite(f"{match[1]}/{AZURITE_ACCOUNT}")
                return
        raise RuntimeError("azurite-blob exited before listening")
    finally:
        process.kill()  # in memory: nothing to save (a SIGTERM waits for idle connections)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
