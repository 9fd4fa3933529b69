"""Start, stop, close, GC and interpreter exit; blocking without CPU; fatal errors in-band."""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from datago import DatagoClient, LoaderError
from datago.engine import Pass
from datago.sink import Sink
from datago.sources import SOURCES
from datago.sources.base import RawSample, SourceContext
from tests.helpers import (
    ScriptedSource,
    big_jpegs,
    datago_threads,
    encode,
    file_config,
    file_id,
    photo,
    write_images,
)


def big_pngs(folder: Path, count: int) -> list[str]:
    """`count` copies of one 900x700 PNG: slow enough to decode that consumers wait."""
    folder.mkdir(exist_ok=True)
    data = encode(photo(900, 700), "PNG", compress_level=1)
    for i in range(count):
        (folder / f"big_{i:02d}.png").write_bytes(data)
    return sorted(file_id(p) for p in folder.iterdir())


def test_close_stops_every_thread_within_a_second(tmp_path: Path) -> None:
    big_pngs(tmp_path, 8)
    client = DatagoClient(file_config(tmp_path, samples_buffer_size=1))
    assert client.get_sample() is not None
    assert datago_threads()
    start = time.monotonic()
    client.close()
    assert time.monotonic() - start < 1.0
    assert not datago_threads()


@pytest.mark.parametrize("how", ["stop", "close"])
def test_big_images_first_sample_and_shutdown_within_a_second(tmp_path: Path, how: str) -> None:
    paths = big_jpegs(tmp_path, 24)
    client = DatagoClient(file_config(tmp_path, samples_buffer_size=1))
    start = time.monotonic()
    first = client.get_sample()
    assert time.monotonic() - start < 1.0  # not a whole chunk of 12 MP decodes first
    assert first is not None and first.id == paths[0]
    assert first.image.to_numpy().shape == (3000, 4000, 3)
    start = time.monotonic()
    client.stop() if how == "stop" else client.close()
    assert time.monotonic() - start < 1.0
    assert not datago_threads()
    client.close()


def test_stop_interrupts_a_chunk_between_samples(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAGO_MAX_TASKS", "1")  # 4 chunks in flight: single samples first
    data = encode(Image.new("RGB", (4000, 3000), (120, 80, 200)), "PNG")  # 42 KB, 12 MP
    for i in range(16):
        (tmp_path / f"flat_{i:02d}.png").write_bytes(data)
    resize = {
        "crop_and_resize": True,
        "default_image_size": 512,
        "downsampling_ratio": 32,
        "min_aspect_ratio": 0.5,
        "max_aspect_ratio": 2.0,
    }  # ~0.2 s a sample
    config = file_config(tmp_path, samples_buffer_size=1, image_config=resize)
    with DatagoClient(config) as client:
        # The first 4 chunks are single samples (sizes not known yet); then chunks of 8.
        samples = list(itertools.islice(client, 4))
        time.sleep(0.1)  # the chunk of 8 is under way
        start = time.monotonic()
        client.stop()
        assert time.monotonic() - start < 1.0
        assert not datago_threads()
    assert [s.id for s in samples] == sorted(file_id(p) for p in tmp_path.iterdir())[:4]
    assert all(s.image.to_numpy().shape == (448, 576, 3) for s in samples)  # 4:3 bucket


def test_interpreter_exit_with_big_images_takes_under_a_second(tmp_path: Path) -> None:
    big_jpegs(tmp_path, 24)
    script = (
        "import atexit, threading, time\n"
        "def report():\n"  # registered first, so it runs after datago's exit hooks
        "    left = [t.name for t in threading.enumerate() if t.name.startswith('datago')]\n"
        "    print(f'{time.monotonic() - exiting:.3f}', left, flush=True)\n"
        "atexit.register(report)\n"
        "from datago import DatagoClient\n"
        f"c = DatagoClient({{'source_type': 'file', 'source_config': {{'root_path': {str(tmp_path)!r}}},"
        " 'samples_buffer_size': 1})\n"
        "assert c.get_sample() is not None\n"
        "exiting = time.monotonic()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    seconds, left = result.stdout.split(maxsplit=1)
    assert float(seconds) < 1.0
    assert left.strip() == "[]"
    assert "Exception" not in result.stderr


def test_garbage_collection_stops_the_pass(tmp_path: Path) -> None:
    write_images(tmp_path, 20)
    client = DatagoClient(file_config(tmp_path, samples_buffer_size=1))
    assert client.get_sample() is not None
    del client
    gc.collect()
    deadline = time.monotonic() + 1.0
    while datago_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not datago_threads()


@pytest.mark.parametrize("thread", ["loop", "decode"])
def test_cycle_collected_on_a_pass_thread_stops_the_pass(
    monkeypatch: pytest.MonkeyPatch, thread: str
) -> None:
    jpeg = encode(photo(16, 16))
    told = threading.Event()
    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    def collect_when_told() -> None:
        told.wait(5.0)
        gc.collect()

    async def endless_source(context: SourceContext) -> AsyncIterator[RawSample]:
        yield RawSample(id="first", source="test", image=jpeg)
        loop = asyncio.get_running_loop()
        if thread == "loop":
            await loop.run_in_executor(context.executor, told.wait, 5.0)
            gc.collect()
        else:
            await loop.run_in_executor(context.executor, collect_when_told)
        while True:
            yield RawSample(id="more", source="test", image=jpeg)

    monkeypatch.setitem(SOURCES, "file", ScriptedSource(endless_source))
    gc.disable()  # only the pass's own thread may collect the cycle
    try:
        client = DatagoClient(file_config(Path("unused"), samples_buffer_size=1))
        client.cycle = client  # type: ignore[attr-defined]
        first = client.get_sample()
        loop_thread = client._pass.thread  # type: ignore[union-attr]
        del client
        told.set()
        loop_thread.join(1.0)
    finally:
        gc.enable()
    assert first is not None and first.id == "first"
    assert not loop_thread.is_alive()
    assert unraisable == []


def test_interpreter_exit_with_an_open_client(tmp_path: Path) -> None:
    write_images(tmp_path, 30)
    script = (
        "from datago import DatagoClient\n"
        f"c = DatagoClient({{'source_type': 'file', 'source_config': {{'root_path': {str(tmp_path)!r}}},"
        " 'samples_buffer_size': 1})\n"
        "assert c.get_sample() is not None\n"
        "print('ok')\n"
    )
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert time.monotonic() - start < 10


def test_waiting_consumer_uses_no_cpu() -> None:
    loop = asyncio.new_event_loop()
    try:
        sink = Sink(loop, capacity=4)
        cpu_before = time.thread_time()
        with pytest.raises(queue.Empty):
            sink.get(timeout=1.0)
        assert time.thread_time() - cpu_before < 0.05
    finally:
        loop.close()


def test_consumer_cpu_while_waiting_for_slow_decodes(tmp_path: Path) -> None:
    big_pngs(tmp_path, 10)
    with DatagoClient(file_config(tmp_path, samples_buffer_size=1)) as client:
        cpu_before, wall_before = time.thread_time(), time.perf_counter()
        count = sum(1 for _ in client)
        cpu, wall = time.thread_time() - cpu_before, time.perf_counter() - wall_before
        waited = client.stats.wait_s
    assert count == 10
    assert waited > 0.5 * wall  # the consumer mostly waited...
    assert cpu < 0.05 * wall + 0.02  # ...without burning CPU


def test_stop_from_another_thread_wakes_a_blocked_consumer(tmp_path: Path) -> None:
    count = 60  # far more than the ~0.05 s before stop() can decode
    big_pngs(tmp_path, count)
    with DatagoClient(file_config(tmp_path, samples_buffer_size=1)) as client:
        got: list[object] = []
        reader = threading.Thread(target=lambda: got.extend(iter(client.get_sample, None)))
        reader.start()
        time.sleep(0.05)
        client.stop()
        reader.join(2.0)
        assert not reader.is_alive()
    assert len(got) < count


def test_concurrent_consumers_get_each_sample_once(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 40)
    got: list[str] = []
    lock = threading.Lock()
    with DatagoClient(file_config(tmp_path, samples_buffer_size=3)) as client:
        client.start()

        def read() -> None:
            while (sample := client.get_sample()) is not None:
                with lock:
                    got.append(sample.id)

        readers = [threading.Thread(target=read) for _ in range(3)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(10)
    assert sorted(got) == paths


def burn_cpu(seconds: float) -> None:
    """Run this thread for `seconds` of CPU: a load that shows in its `thread_time`."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


async def test_the_callers_loop_never_stalls_in_start_stream_or_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Starting and closing a pass are made to cost 0.2 s of CPU each. The caller's loop times
    # each of its callbacks in CPU, not wall time: a loaded machine that deschedules the loop
    # thread is no stall, and the 0.2 s would show in whichever callback ran them.
    paths = big_pngs(tmp_path, 6)
    caller = threading.get_ident()
    on_caller: list[str] = []  # start and close must never run on the caller's thread
    timed: list[float] = []
    init, close, run = Pass.__init__, Pass.close, asyncio.events.Handle._run

    def slow_init(self: Pass, *args: Any) -> None:
        burn_cpu(0.2)
        if threading.get_ident() == caller:
            on_caller.append("start")
        init(self, *args)

    def slow_close(self: Pass, timeout: float = 5.0) -> None:
        burn_cpu(0.2)
        if threading.get_ident() == caller:
            on_caller.append("close")
        close(self, timeout)

    def timed_run(handle: asyncio.Handle) -> None:
        if threading.get_ident() != caller:  # the passes' own loops
            return run(handle)
        start = time.thread_time()
        run(handle)
        timed.append(time.thread_time() - start)

    monkeypatch.setattr(Pass, "__init__", slow_init)
    monkeypatch.setattr(Pass, "close", slow_close)
    monkeypatch.setattr(asyncio.events.Handle, "_run", timed_run)
    gc.disable()  # a collection's pause is not the client's
    try:
        async with DatagoClient(file_config(tmp_path, samples_buffer_size=1)) as client:
            streamed = [sample.id async for sample in client]  # starts in `async for`
        client = DatagoClient(file_config(tmp_path, samples_buffer_size=1))
        first = await client.aget_sample()  # starts in the first aget_sample()
        await client.aclose()
    finally:
        gc.enable()
        monkeypatch.setattr(asyncio.events.Handle, "_run", run)
    assert streamed == paths and first is not None and first.id == paths[0]
    assert on_caller == []
    assert len(timed) >= len(paths)  # the caller's callbacks were timed
    assert max(timed) < 0.05, sorted(timed)[-5:]


async def test_async_consumer_cancelled_leaves_client_usable(tmp_path: Path) -> None:
    paths = big_pngs(tmp_path, 4)
    with DatagoClient(file_config(tmp_path, samples_buffer_size=1)) as client:
        client.start()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.aget_sample(), timeout=0.001)
        rest = [s.id async for s in client]
    assert rest == paths


def test_fatal_source_error_is_raised_after_earlier_samples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    jpeg = encode(photo(16, 16))

    async def failing_source(context: object) -> AsyncIterator[RawSample]:
        for i in range(3):
            yield RawSample(id=f"s{i}", source="test", image=jpeg)
        raise OSError("disk gone")

    monkeypatch.setitem(SOURCES, "file", ScriptedSource(failing_source))
    with DatagoClient(file_config(Path("unused"))) as client:
        got = [client.get_sample() for _ in range(3)]
        assert [s.id for s in got if s] == ["s0", "s1", "s2"]
        with pytest.raises(LoaderError, match="disk gone") as info:
            next(iter(client))
        assert isinstance(info.value.__cause__, OSError)
        assert client.get_sample() is None


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_no_file_descriptor_left_open(tmp_path: Path) -> None:
    write_images(tmp_path, 12)
    with DatagoClient(file_config(tmp_path)) as warmup:
        list(warmup)
    before = open_fds()
    for _ in range(3):
        with DatagoClient(file_config(tmp_path, samples_buffer_size=1)) as client:
            assert client.get_sample() is not None
    assert open_fds() == before


def test_exception_in_the_consumer_closes_everything(tmp_path: Path) -> None:
    big_pngs(tmp_path, 6)
    start = time.monotonic()
    with (
        pytest.raises(ZeroDivisionError),
        DatagoClient(file_config(tmp_path, samples_buffer_size=1)) as client,
    ):
        for _ in client:
            1 / 0  # noqa: B018
    assert time.monotonic() - start < 2.0
    assert not datago_threads()


def test_ctrl_c_interrupts_a_blocked_consumer(tmp_path: Path) -> None:
    big_pngs(tmp_path, 30)
    script = (
        "import signal, sys, time\n"
        # A pytest started in the background (`cmd &` in a script) passes SIGINT on ignored.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from datago import DatagoClient\n"
        f"c = DatagoClient({{'source_type': 'file', 'source_config': {{'root_path': {str(tmp_path)!r}}},"
        " 'samples_buffer_size': 1})\n"
        "try:\n"
        "    for s in c:\n"
        "        print('sample', flush=True)\n"
        "        time.sleep(0.01)\n"
        "except KeyboardInterrupt:\n"
        "    t = time.monotonic(); c.close()\n"
        "    print(f'interrupted {time.monotonic() - t:.3f}', flush=True)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "sample"
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=10)
    assert child.returncode == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("interrupted"), out
    assert float(last.split()[1]) < 1.0
    assert time.monotonic() - sent < 3.0
