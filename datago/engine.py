"""The engine: one pass over the data on an asyncio loop in a background thread.

source (async generator, on the loop) -> bounded queue of raw samples -> chunks decoded in a
ThreadPoolExecutor (`datago.dispatch`) -> `Sink` (bounded by credits) -> consumers, in the
source's order. A pass delivers exactly `limit` good samples (or the whole source), then the
end marker; a fatal error travels through the sink and is raised by the consumer after the
samples produced before it.
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
from typing import Any

from datago._malloc import tune_malloc
from datago.budget import ByteBudget
from datago.config import ClientConfig, Environment
from datago.dispatch import Dispatcher, Prefetch, SourceEnd
from datago.image_processor import ImageProcessor
from datago.sink import END, Failed, Sink
from datago.sources import node_of
from datago.sources.base import SampleStream, SourceContext, Split
from datago.stats import Stats

logger = logging.getLogger(__name__)

_live_passes: weakref.WeakSet[Pass] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a pass starts: its number, source samples already consumed, samples delivered,
    and the source's state there (None: replay the source and skip `position` samples)."""

    epoch: int = 0
    position: int = 0
    delivered: int = 0
    source: dict[str, Any] | None = None


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
        raws = Prefetch(self.config.prefetch_buffer_size, self.budget, processor)
        node, cursor = node_of(self.config.source_type), self.cursor
        seek = node.seeks and cursor.source is not None  # else replay up to the position
        state = cursor.source if seek else None
        stream = node.open(self.config.source_config, self.split, context, state)
        first, skip = (cursor.position, 0) if seek else (0, cursor.position)
        feeder = asyncio.create_task(_feed(stream, raws, first, skip))
        try:
            limit = self.config.limit
            dispatcher = Dispatcher(
                executor=executor,
                threads=self.environment.max_tasks,
                processor=processor,
                budget=self.budget,
                sink=self.sink,
                stats=self.stats,
                cancelled=self.cancelled,
                limit=None if limit is None else limit - cursor.delivered,
            )
            await dispatcher.run(raws)
        finally:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder


async def _feed(stream: SampleStream, raws: Prefetch, first: int, skip: int) -> None:
    """Number the source's samples from `first` into the bounded queue, after skipping those
    numbered below `skip` (a resumed pass of a source that cannot seek); the source's end or
    failure goes in-band."""
    end = SourceEnd()
    number = first
    try:
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            async for raw, position in stream:
                if number >= skip:
                    await raws.push(number, raw, position)
                number += 1
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        end = SourceEnd(exc)
    await raws.put(end)


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
