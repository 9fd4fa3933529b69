"""The engine: one pass over the data on an asyncio loop in a background thread.

source (async generator, on the loop) -> bounded queue of raw samples -> chunks decoded in a
ThreadPoolExecutor -> `Sink` (bounded by credits) -> consumers, in the source's order. A pass delivers exactly
`limit` good samples (or the whole source), then the end marker; a fatal error travels
through the sink and is raised by the consumer after the samples produced before it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datago._malloc import tune_malloc
from datago.budget import ByteBudget
from datago.builder import build_chunk, estimate_bytes, held_bytes
from datago.config import ClientConfig, Environment
from datago.image_processor import ImageProcessor
from datago.sink import END, Delivery, Failed, Sink
from datago.sources import node_of
from datago.sources.base import Position, RawSample, SampleStream, SourceContext, Split
from datago.stats import Stats

logger = logging.getLogger(__name__)

CHUNK_SIZE = 8
"""Samples per executor task: one dispatch costs ~80 us, so small images go in groups."""

CHUNK_BYTES = 4 << 20
"""A chunk stops growing once its encoded bytes reach this: big images (~12 MP JPEGs) go one
at a time, so no sample waits behind a whole chunk of slow decodes. Smaller caps cost more
than they save (512 KiB, two 1.2 MP JPEGs a chunk: ~8 % fewer img/s, measured)."""

BIG_SAMPLE_BYTES = 32 << 20
"""A sample whose estimate (encoded + decoded) reaches this takes a decode thread's whole
share of the window: one big image per thread in flight. A smaller one takes a share in
proportion (one slot at least), and a chunk stops growing before its estimates pass this:
1.2 MP JPEGs (3.9 MB each) still go 8 to a chunk, 4 chunks per thread."""

WINDOW_PER_THREAD = 4
"""Window slots per decode thread: enough that a slow chunk does not leave the executor
idle while the chunks after it wait for their turn (samples come out in source order)."""

_live_passes: weakref.WeakSet[Pass] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a pass starts: its number, source samples already consumed, samples delivered,
    and the source's state there (None: replay the source and skip `position` samples)."""

    epoch: int = 0
    position: int = 0
    delivered: int = 0
    source: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _SourceEnd:
    error: BaseException | None = None


_Numbered = tuple[int, RawSample, Position | None]
"""A raw sample, its number in the source stream, and the source's position after it."""


class Pass:
    """One pass over the data: owns the loop thread, the executor and the sink."""

    def __init__(
        self,
        config: ClientConfig,
        environment: Environment,
        stats: Stats,
        cursor: Cursor,
        split: Split,
    ) -> None:
        self.config = config
        self.environment = environment
        self.stats = stats
        self.cursor = cursor
        self.split = split
        self.loop = asyncio.new_event_loop()
        self.budget = ByteBudget(
            config.max_buffer_bytes,
            samples=config.samples_buffer_size + 1,  # +1: the one in the consumer's hand
            prefetch=config.prefetch_buffer_size,
            stats=stats,
        )
        self.sink = Sink(self.loop, config.samples_buffer_size, self.budget)
        self._main: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self.cancelled = threading.Event()
        """Set on close: running chunks stop before their next sample."""
        self._threads: set[int] = set()  # the loop's and its executors' threads
        self.thread = threading.Thread(target=self._run, name="datago-loop", daemon=True)
        self.thread.start()
        self._started.wait()
        _live_passes.add(self)

    def close(self, timeout: float = 5.0) -> None:
        """Cancel the pass and wait for its threads. Idempotent, callable from any thread."""
        self.cancel()
        if threading.get_ident() in self._threads:
            return  # e.g. a GC finalizer on a decode thread: joining would wait for itself
        self.thread.join(timeout)
        if self.thread.is_alive():
            logger.error("datago loop thread did not stop within %.1fs", timeout)

    def cancel(self) -> None:
        """Tell the pass to stop and wake its consumers, without waiting. Any thread."""
        self.cancelled.set()
        with contextlib.suppress(RuntimeError):  # the loop already finished and closed
            self.loop.call_soon_threadsafe(self._cancel)
        if threading.get_ident() not in self._threads:
            # The loop thread may be inside the sink's lock; there `_run` ends the stream.
            self.sink.finish(END)  # wakes consumers blocked in get()

    def _adopt(self) -> None:
        self._threads.add(threading.get_ident())

    def _cancel(self) -> None:
        # Once: a second cancel would reach the task `_main` awaits in its cleanup (the
        # source closing its HTTP sessions) and leave that cleanup half done.
        if self._main is not None and not self._main.cancelling():
            self._main.cancel()

    def _run(self) -> None:
        self._adopt()
        asyncio.set_event_loop(self.loop)
        resolver = ThreadPoolExecutor(thread_name_prefix="datago-resolve", initializer=self._adopt)
        self.loop.set_default_executor(resolver)
        try:
            self._main = self.loop.create_task(self._produce_all())
            self.loop.call_soon(self._started.set)
            self.loop.run_until_complete(self._main)
        except asyncio.CancelledError:
            self.sink.finish(END)
        finally:
            self._started.set()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            # aiohttp resolves host names in the loop's default executor: join its threads,
            # here (`shutdown_default_executor` starts a thread, refused at interpreter exit).
            resolver.shutdown(wait=True)
            self.loop.close()

    async def _produce_all(self) -> None:
        executor = ThreadPoolExecutor(
            self.environment.max_tasks, thread_name_prefix="datago-decode", initializer=self._adopt
        )
        try:
            await self._produce(executor)
            self.sink.finish(END)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.sink.finish(Failed(exc))
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    async def _produce(self, executor: ThreadPoolExecutor) -> None:
        processor = ImageProcessor(self.config.image_config)
        context = SourceContext(
            environment=self.environment,
            executor=executor,
            stats=self.stats,
            epoch=self.cursor.epoch,
        )
        raws = _Prefetch(self.config.prefetch_buffer_size, self.budget, processor)
        node, cursor = node_of(self.config.source_type), self.cursor
        seek = node.seeks and cursor.source is not None  # else replay up to the position
        state = cursor.source if seek else None
        stream = node.open(self.config.source_config, self.split, context, state)
        first, skip = (cursor.position, 0) if seek else (0, cursor.position)
        feeder = asyncio.create_task(_feed(stream, raws, first, skip))
        try:
            await _Dispatcher(self, executor, processor).run(raws)
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder


async def _feed(
    stream: SampleStream, raws: asyncio.Queue[_Numbered | _SourceEnd], first: int, skip: int
) -> None:
    """Number the source's samples from `first` into the bounded queue, after skipping those
    numbered below `skip` (a resumed pass of a source that cannot seek); the source's end or
    failure goes in-band."""
    end = _SourceEnd()
    number = first
    try:
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for raw, position in stream:
                if number >= skip:
                    await raws.put((number, raw, position))
                number += 1
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        end = _SourceEnd(exc)
    await raws.put(end)


class _Prefetch(asyncio.Queue[_Numbered | _SourceEnd]):
    """The bounded queue of raw samples; their encoded bytes count in the pass's budget."""

    def __init__(self, maxsize: int, budget: ByteBudget, processor: ImageProcessor) -> None:
        super().__init__(maxsize)
        self.budget = budget
        self.processor = processor

    async def put(self, item: _Numbered | _SourceEnd) -> None:
        if not isinstance(item, _SourceEnd):
            raw = item[1]
            size = _in_memory(raw)
            await self.budget.admit(size, estimate_bytes(raw, self.processor) if size else 0)
        await super().put(item)


@dataclass(frozen=True, slots=True)
class _Job:
    """A raw sample sent to a decode thread, and the bytes reserved for it."""

    number: int
    raw: RawSample
    position: Position | None
    encoded: int
    """Bytes it held in the prefetch queue."""
    estimate: int
    """Bytes reserved for it until it is built (encoded + decoded, from its headers)."""


class _Dispatcher:
    """Sends chunks of raw samples to the executor as the window and the byte budget allow,
    never more than `limit` needs."""

    def __init__(
        self, owner: Pass, executor: ThreadPoolExecutor, processor: ImageProcessor
    ) -> None:
        self.owner = owner
        self.executor = executor
        self.processor = processor
        self.budget = owner.budget
        limit = owner.config.limit
        self.limit = limit - owner.cursor.delivered if limit is not None else float("inf")
        self.accepted = 0
        self.reserved = 0  # samples dispatched but not yet delivered or dropped
        self.free_slots = WINDOW_PER_THREAD * owner.environment.max_tasks
        self.held_back: _Numbered | None = None  # taken from the queue, sent with the next chunk
        self.tasks: set[asyncio.Task[None]] = set()
        self.previous = asyncio.Event()
        self.previous.set()
        self.built, self.built_bytes = 0, 0  # samples built so far and their encoded bytes

    async def run(self, raws: asyncio.Queue[_Numbered | _SourceEnd]) -> None:
        try:
            await self._dispatch(raws)
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _dispatch(self, raws: asyncio.Queue[_Numbered | _SourceEnd]) -> None:
        end: _SourceEnd | None = None
        while end is None:
            while self.accepted + self.reserved >= self.limit:
                if not self.tasks:
                    return
                await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            if self.accepted >= self.limit:
                break
            most = min(CHUNK_SIZE, int(min(self.limit - self.accepted - self.reserved, 1e9)))
            chunk, slots, end = await self._take_chunk(raws, most)
            if chunk:
                self.reserved += len(chunk)
                turn, self.previous = self.previous, asyncio.Event()
                task = asyncio.create_task(self._deliver(chunk, slots, turn, self.previous))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        if self.tasks:
            await asyncio.gather(*self.tasks)
        if end is not None and end.error is not None:
            raise end.error

    async def _take_chunk(
        self, raws: asyncio.Queue[_Numbered | _SourceEnd], most: int
    ) -> tuple[list[_Job], int, _SourceEnd | None]:
        """Wait for a raw sample and room for it, then add what else is ready and fits now: up
        to `most` samples, `CHUNK_BYTES` encoded, `BIG_SAMPLE_BYTES` estimated. Returns the
        chunk, the window slots it took, and the source's end if it came."""
        item = self.held_back or await raws.get()
        self.held_back = None
        if isinstance(item, _SourceEnd):
            return [], 0, item
        job = await self._wait_for_room(item)
        chunk: list[_Job] = []
        slots = largest = estimate = 0
        encoded = 0.0
        while True:
            grown = self._slots(max(largest, job.estimate)) - slots
            chunk.append(job)
            self.free_slots -= grown
            self.budget.reserve(job.encoded, job.estimate)
            slots, largest = slots + grown, max(largest, job.estimate)
            estimate += job.estimate
            encoded += self._encoded_size(job.raw)
            if len(chunk) >= most or encoded >= CHUNK_BYTES or raws.empty():
                return chunk, slots, None
            item = raws.get_nowait()
            if isinstance(item, _SourceEnd):
                return chunk, slots, item
            job = self._job(item)
            if (
                self._unknown(job.raw)
                or estimate + job.estimate > BIG_SAMPLE_BYTES
                or self._slots(max(largest, job.estimate)) - slots > self.free_slots
                or not self.budget.fits(job.estimate - job.encoded)
            ):
                self.held_back = item
                return chunk, slots, None

    async def _wait_for_room(self, item: _Numbered) -> _Job:
        """Wait until the window and the budget have room for this sample. A file before any
        was read has no estimate yet: it goes alone."""
        while True:
            job = self._job(item)
            if self._unknown(item[1]):
                room = self.reserved == 0 and self.free_slots > 0
            else:
                room = self.free_slots >= self._slots(job.estimate) and self.budget.fits(
                    job.estimate - job.encoded
                )
            if room:
                return job
            self.budget.dispatcher_waiting = True
            try:
                await self.budget.changed.wait()
            finally:
                self.budget.dispatcher_waiting = False

    def _job(self, item: _Numbered) -> _Job:
        number, raw, position = item
        if isinstance(raw.image, Path):  # read by the decode thread: the largest so far
            estimate = self.budget.largest
        else:
            estimate = estimate_bytes(raw, self.processor)
        return _Job(number, raw, position, _in_memory(raw), estimate)

    def _unknown(self, raw: RawSample) -> bool:
        return isinstance(raw.image, Path) and not self.budget.largest

    @staticmethod
    def _slots(estimate: int) -> int:
        return min(WINDOW_PER_THREAD, max(1, -(-WINDOW_PER_THREAD * estimate // BIG_SAMPLE_BYTES)))

    async def _deliver(
        self, chunk: list[_Job], slots: int, turn: asyncio.Event, delivered: asyncio.Event
    ) -> None:
        """Build a chunk in the executor, then hand it over once the chunk before it is.

        The chunk holds its window slots until handed over, and its bytes until each sample
        is taken, so decoded samples waiting for their turn are bounded too."""
        loop = asyncio.get_running_loop()
        stats, budget = self.owner.stats, self.budget
        try:
            raws = [job.raw for job in chunk]
            built, times = await loop.run_in_executor(
                self.executor, build_chunk, raws, self.processor, stats, self.owner.cancelled
            )
            stats.add(times)
            if len(built) < len(chunk):  # build_chunk stopped early: the pass is closing
                raise asyncio.CancelledError
            self.built += len(chunk)
            self.built_bytes += times.bytes_read
            sizes = [0 if sample is None else held_bytes(sample) for sample in built]
            budget.learn(times.largest)
            budget.settle(sum(sizes) - sum(job.estimate for job in chunk))
            await turn.wait()
            for job, sample, size in zip(chunk, built, sizes, strict=True):
                if sample is not None and self.accepted < self.limit:
                    delivery = Delivery(sample, job.number + 1, job.position, size)
                    await self.owner.sink.put(delivery)
                    self.accepted += 1
                else:
                    budget.release(size)
                self.reserved -= 1
            delivered.set()
        finally:
            self.free_slots += slots
            budget.changed.notify()

    def _encoded_size(self, raw: RawSample) -> float:
        """Encoded bytes of a raw sample; a file not read yet counts as the mean so far."""
        if isinstance(raw.image, Path):
            size = self.built_bytes / self.built if self.built else CHUNK_BYTES
        else:
            size = len(raw.image or b"")
        masks = sum(map(len, raw.masks.values()))
        return size + masks + sum(map(len, raw.additional_images.values()))


def _in_memory(raw: RawSample) -> int:
    """Encoded bytes a raw sample holds in memory (a file not read yet: none)."""
    image = raw.image if isinstance(raw.image, bytes) else b""
    images = (image, *raw.masks.values(), *raw.additional_images.values())
    return sum(map(len, images)) + sum(map(len, raw.latents.values()))


def _close_live_passes() -> None:
    """Interpreter exit: stop every pass still running, within a second in all."""
    passes = list(_live_passes)
    for run in passes:
        run.cancel()
    deadline = time.monotonic() + 1.0
    for run in passes:
        run.close(timeout=max(deadline - time.monotonic(), 0.0))


def live_cleanup_threads() -> int:
    """Passes stopped whose threads have not finished yet (the wheel's function of this name:
    its `stop()` returns at once and reaps in the background; ours joins, so usually 0)."""
    return sum(1 for run in list(_live_passes) if run.cancelled.is_set() and run.thread.is_alive())


# Run at exit before concurrent.futures refuses new work and (Python >= 3.12) before new
# threads are refused: threading's exit hooks run first, the last registered first.
_register_exit_hook = getattr(threading, "_register_atexit", atexit.register)
_register_exit_hook(_close_live_passes)


def start_pass(
    config: ClientConfig,
    stats: Stats,
    cursor: Cursor,
    split: Split,
    environment: Environment | None = None,
) -> Pass:
    """Start a pass in the background at `cursor`; the environment is read now if not given."""
    stats.started_at = stats.started_at or time.perf_counter()
    environment = environment or Environment.from_env()
    if environment.tune_malloc:
        tune_malloc()
    return Pass(config, environment, stats, cursor, split)
