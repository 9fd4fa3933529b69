"""Raw samples to decode threads: the bounded prefetch queue, and the dispatcher that sends
them in chunks as the window and the byte budget allow, and hands the built samples to the
`Sink` in the source's order."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from datago.budget import ByteBudget
from datago.builder import build_chunk, estimate_bytes, held_bytes
from datago.image_processor import ImageProcessor
from datago.sink import Delivery, Sink
from datago.sources.base import Position, RawSample
from datago.stats import Stats

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


@dataclass(frozen=True, slots=True)
class SourceEnd:
    """The source's end, in band: `error` if it failed."""

    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A raw sample (its number in the source stream, the source's position after it) on its
    way to a decode thread, and the bytes reserved for it."""

    number: int
    raw: RawSample
    position: Position | None
    encoded: int
    """Bytes it holds in the prefetch queue."""
    estimate: int
    """Bytes reserved for it until it is built (encoded + decoded, from its headers, read once
    when it is queued); a file the decode thread reads: the largest sample so far, when sent."""


class Prefetch(asyncio.Queue[Job | SourceEnd]):
    """The bounded queue of raw samples; their encoded bytes count in the pass's budget."""

    def __init__(self, maxsize: int, budget: ByteBudget, processor: ImageProcessor) -> None:
        super().__init__(maxsize)
        self.budget = budget
        self.processor = processor

    async def push(self, number: int, raw: RawSample, position: Position | None) -> None:
        """Queue a raw sample once the budget admits its encoded bytes."""
        size = in_memory(raw)
        estimate = estimate_bytes(raw, self.processor) if size else 0
        await self.budget.admit(size, estimate)
        await self.put(Job(number, raw, position, size, estimate))


class Dispatcher:
    """Sends chunks of raw samples to the executor as the window and the byte budget allow,
    never more than `limit` needs."""

    def __init__(
        self,
        *,
        executor: ThreadPoolExecutor,
        threads: int,
        processor: ImageProcessor,
        budget: ByteBudget,
        sink: Sink,
        stats: Stats,
        cancelled: threading.Event,
        limit: int | None,
    ) -> None:
        """`limit`: the samples this pass may still deliver (None: all); `cancelled` stops a
        chunk being built."""
        self.executor = executor
        self.processor = processor
        self.budget = budget
        self.sink = sink
        self.stats = stats
        self.cancelled = cancelled
        self.limit = float("inf") if limit is None else limit
        self.accepted = 0
        self.reserved = 0  # samples dispatched but not yet delivered or dropped
        self.free_slots = WINDOW_PER_THREAD * threads
        self.held_back: Job | None = None  # taken from the queue, sent with the next chunk
        self.tasks: set[asyncio.Task[None]] = set()
        self.previous = asyncio.Event()
        self.previous.set()
        self.built, self.built_bytes = 0, 0  # samples built so far and their encoded bytes

    async def run(self, raws: Prefetch) -> None:
        try:
            await self._dispatch(raws)
        finally:
            for task in self.tasks:
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _dispatch(self, raws: Prefetch) -> None:
        end: SourceEnd | None = None
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
        self, raws: Prefetch, most: int
    ) -> tuple[list[Job], int, SourceEnd | None]:
        """Wait for a raw sample and room for it, then add what else is ready and fits now: up
        to `most` samples, `CHUNK_BYTES` encoded, `BIG_SAMPLE_BYTES` estimated. Returns the
        chunk, the window slots it took, and the source's end if it came."""
        item = self.held_back or await raws.get()
        self.held_back = None
        if isinstance(item, SourceEnd):
            return [], 0, item
        job = await self._wait_for_room(item)
        chunk: list[Job] = []
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
            if isinstance(item, SourceEnd):
                return chunk, slots, item
            job = self._sized(item)
            if (
                self._unknown(job.raw)
                or estimate + job.estimate > BIG_SAMPLE_BYTES
                or self._slots(max(largest, job.estimate)) - slots > self.free_slots
                or not self.budget.fits(job.estimate - job.encoded)
            ):
                self.held_back = item
                return chunk, slots, None

    async def _wait_for_room(self, item: Job) -> Job:
        """Wait until the window and the budget have room for this sample. A file before any
        was read has no estimate yet: it goes alone."""
        while True:
            job = self._sized(item)
            if self._unknown(job.raw):
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

    def _sized(self, job: Job) -> Job:
        """The job with its estimate now: a file the decode thread reads is the largest so far."""
        if isinstance(job.raw.image, Path):
            return replace(job, estimate=self.budget.largest)
        return job

    def _unknown(self, raw: RawSample) -> bool:
        return isinstance(raw.image, Path) and not self.budget.largest

    @staticmethod
    def _slots(estimate: int) -> int:
        return min(WINDOW_PER_THREAD, max(1, -(-WINDOW_PER_THREAD * estimate // BIG_SAMPLE_BYTES)))

    async def _deliver(
        self, chunk: list[Job], slots: int, turn: asyncio.Event, delivered: asyncio.Event
    ) -> None:
        """Build a chunk in the executor, then hand it over once the chunk before it is.

        The chunk holds its window slots until handed over, and its bytes until each sample
        is taken, so decoded samples waiting for their turn are bounded too."""
        loop = asyncio.get_running_loop()
        stats, budget = self.stats, self.budget
        try:
            raws = [job.raw for job in chunk]
            built, times = await loop.run_in_executor(
                self.executor, build_chunk, raws, self.processor, stats, self.cancelled
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
                    await self.sink.put(delivery)
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


def in_memory(raw: RawSample) -> int:
    """Encoded bytes a raw sample holds in memory (a file not read yet: none)."""
    image = raw.image if isinstance(raw.image, bytes) else b""
    images = (image, *raw.masks.values(), *raw.additional_images.values())
    return sum(map(len, images)) + sum(map(len, raw.latents.values()))
