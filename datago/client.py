"""`DatagoClient`: the Rust wheel's surface and ours, over one engine.

The wheel's calls log and return None where ours raise; see the guide's "Reading samples"."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, cast

from datago import resume
from datago.config import ClientConfig, Environment
from datago.engine import Cursor, Pass, start_pass
from datago.errors import ClientClosedError, ConfigError, DatagoError, LoaderError
from datago.sample import Sample, python_types
from datago.sink import END, Delivery, Failed, Item
from datago.sources import node_of
from datago.sources.base import Partition, Position, Split
from datago.stats import Stats

logger = logging.getLogger(__name__)

WHEEL_SAMPLE_TIMEOUT_S = 300.0
"""How long the wheel's `get_sample()` waits for one sample before it gives up."""


class DatagoClient:
    """Streams samples from the source the config (JSON text, a dict or a `ClientConfig`) names;
    a dict or `ClientConfig` that cannot be used raises `ConfigError` here, JSON text later."""

    def __init__(
        self,
        config: str | Mapping[str, Any] | ClientConfig | None = None,
        *,
        str_config: str | None = None,
        workers: Partition | None = None,
        sample_timeout: float | None = WHEEL_SAMPLE_TIMEOUT_S,
        environment: Environment | None = None,
    ) -> None:
        given = config if str_config is None else str_config
        if given is None or (config is not None and str_config is not None):
            raise TypeError("DatagoClient() takes one config: `config` or `str_config`")
        self._config = _parse(given)
        self._split = Split(0, 1, workers or Partition())
        self._user_seed = False
        if isinstance(self._config, ClientConfig):
            source = self._config.source_config
            self._split = Split(source.rank, max(source.world_size, 1), self._split.workers)
            self._user_seed = getattr(source, "seed", None) is not None
            if self._split.part.count == 1:
                # A single reader may pick its own seed; parts of a split must share the user's.
                self._config = _with_seed(self._config)
        self._environment = environment
        self.sample_timeout = sample_timeout
        self._failure: Exception | None = None  # why the wheel's get_sample() gave None
        self._stats = Stats()
        self._lock = threading.Lock()
        self._pass: Pass | None = None
        self._finished = True  # no pass running: get_sample() starts one only if none ran yet
        self._completed = False  # the last pass delivered everything: state_dict() says next
        self._cursor = Cursor(epoch=-1)  # where the consumer stands in the current pass
        self._position: Position | None = None  # the source's, after the last sample taken
        self._resume: Cursor | None = None  # set by load_state_dict for the next start()
        self._closed = False
        self._finalizer: weakref.finalize[[], DatagoClient] | None = None

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def config(self) -> ClientConfig:
        """The parsed config. Raises the `ConfigError` of JSON text that could not be used."""
        if isinstance(self._config, ConfigError):
            raise self._config
        return self._config

    @config.setter
    def config(self, config: ClientConfig) -> None:
        self._config = config

    def _raise_config_error(self) -> None:
        if isinstance(self._config, ConfigError):
            raise self._config

    @property
    def error(self) -> Exception | None:
        """Why the wheel's `get_sample()` returned None before the end of the data: the
        config's `ConfigError`, the pass's `LoaderError`, or a `TimeoutError`; else None."""
        return self._config if isinstance(self._config, ConfigError) else self._failure

    def start(self) -> None:
        """Start a pass; does nothing while one runs. After the end or `stop()`, a new pass.

        With a config that cannot be used, it does nothing (the wheel's way)."""
        with self._lock:
            if self._closed:
                raise ClientClosedError("this DatagoClient is closed")
            if isinstance(self._config, ConfigError):
                return
            if self._pass is not None and not self._finished:
                return
            self._detach_pass()()  # a pass still running here has ended: a quick join
            self._cursor = self._resume or Cursor(epoch=self._cursor.epoch + 1)
            self._resume, self._position = None, None
            self._pass = start_pass(
                self._config, self._stats, self._cursor, self._split, self._environment
            )
            self._finished = self._completed = False
            self._failure = None
            # Closes the pass when the client is garbage-collected; holds no reference to it.
            self._finalizer = weakref.finalize(self, self._pass.close)
            self._finalizer.atexit = False  # at exit the engine closes every pass in 1 s

    def stop(self) -> None:
        """Stop the current pass within a second; `start()` begins a new one."""
        with self._lock:
            closing = self._detach_pass()
        closing()  # joined outside the lock: a consumer woken by the end may take it meanwhile

    def close(self) -> None:
        """Stop and release everything for good. Idempotent."""
        with self._lock:
            closing = self._detach_pass()
            self._closed = True
        closing()

    async def aclose(self) -> None:
        """`close()` for asyncio code: the pass's threads are joined off the caller's loop."""
        await asyncio.to_thread(self.close)

    def _detach_pass(self) -> Callable[[], object]:
        """Mark the pass finished (under the lock); the returned call closes it once."""
        finalizer, self._finalizer = self._finalizer, None
        if finalizer is None:
            return _nothing
        self._finished = True
        return finalizer

    def __enter__(self) -> DatagoClient:
        self._raise_config_error()  # ours: a config that cannot be used raises here
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> DatagoClient:
        self._raise_config_error()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- reading ---------------------------------------------------------------------------

    def get_sample(self, timeout: float | None = None) -> Sample | None:
        """The next sample; None at the end of the pass (call `start()` for another).

        The wheel's way: blocks, without using CPU, until a sample is ready; the first call
        starts a pass. None also when the pass cannot go on (a config or a source it cannot
        use, a fatal source error): the reason is logged at ERROR once and kept in
        `client.error`. After `sample_timeout` seconds without a sample it logs a warning,
        stops the pass and returns None, as the wheel after 300 s.

        Args:
            timeout: ours: raise `TimeoutError` after this many seconds without a sample
                instead (the pass goes on).
        """
        if isinstance(self._config, ConfigError):
            return None  # logged when the client was made
        try:
            return self._next_sample(timeout, give_up_after=self.sample_timeout)
        except (ConfigError, LoaderError) as exc:
            self._gave_up(exc)
            return None

    def get_sample_auto_convert(self) -> dict[str, Any] | None:
        """`get_sample()` as the wheel's dict of Python types: PIL images (None for a sample
        without one), attribute values as JSON text, latents as `{"data", "len"}`."""
        sample = self.get_sample()
        return None if sample is None else python_types(sample)

    async def aget_sample(self) -> Sample | None:
        """`get_sample` for asyncio code: awaits without blocking the caller's loop; ours,
        so it raises what the pass failed with. The first call starts the pass off the loop."""
        if self._pass is None:
            self._raise_config_error()
            await asyncio.to_thread(self.start)
        current = self._current_pass()
        if current is None:
            return None
        with self._stats.waiting():
            item = await current.sink.aget()
        return self._unwrap(current, item)

    def _next_sample(
        self, timeout: float | None, give_up_after: float | None = None
    ) -> Sample | None:
        """The next sample; `TimeoutError` after `timeout` s, or after `give_up_after` s
        the wheel's answer: the pass stopped and None."""
        current = self._current_pass()
        if current is None:
            return None
        wait = timeout if timeout is not None else give_up_after
        try:
            with self._stats.waiting():
                item = current.sink.get(wait)
        except Exception as exc:  # queue.Empty
            if timeout is not None:
                raise TimeoutError(f"no sample within {timeout}s") from exc
            logger.warning(
                "Timeout waiting for sample after %gs: pass stopped, returning None", wait
            )
            self.stop()
            self._failure = TimeoutError(f"no sample within {wait}s")
            return None
        return self._unwrap(current, item)

    def _gave_up(self, error: ConfigError | LoaderError) -> None:
        """The wheel's answer to a pass that cannot go on: None, the reason logged once."""
        if error is not self._failure:
            self._failure = error
            logger.error("%s; get_sample() returns None (see client.error)", error)

    def __iter__(self) -> Iterator[Sample]:
        """Iterate one pass; a loop started after the end begins a new pass. Raises what
        the pass failed with (`SourceError`, ...) after the samples produced before it."""
        self._raise_config_error()
        if self._finished or self._pass is None:
            self.start()
        while (sample := self._next_sample(None)) is not None:
            yield sample

    async def __aiter__(self) -> AsyncIterator[Sample]:
        """`async for sample in client`: one pass, as `__iter__`, started off the loop."""
        self._raise_config_error()
        if self._finished or self._pass is None:
            await asyncio.to_thread(self.start)
        while (sample := await self.aget_sample()) is not None:
            yield sample

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters and stage timings, summed over every pass."""
        return self._stats.snapshot()

    def _current_pass(self) -> Pass | None:
        if self._closed:
            raise ClientClosedError("this DatagoClient is closed")
        self._raise_config_error()
        if self._pass is None:
            self.start()
        return None if self._finished else self._pass

    # -- resuming --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Where the consumer stands, as plain values (JSON-ready; `datago.resume` has the
        format): the pass, the counts, the seed, and the source's own state.

        `load_state_dict` on a client with the same config (in this process or another)
        continues with exactly the samples not delivered yet, reading the source from there
        (a file index, shard byte offsets, a page cursor) rather than from its start. A pass
        stopped or closed before its end keeps its place; one that reached its end resumes
        at the next pass.

        Raises:
            ConfigError: the source cannot resume (the db source's random sampling), or
                random sampling is split over ranks or torch workers without
                `source_config.seed`: that order cannot be replayed.
        """
        source = self.config.source_config
        refusal = node_of(self.config.source_type).resume_refusal(source)
        if refusal is not None:
            raise ConfigError(f"state_dict(): {refusal}")
        if getattr(source, "random_sampling", False) and _seed_of(self.config) is None:
            raise ConfigError(
                "state_dict() needs source_config.seed: with random_sampling split over "
                "ranks or torch workers, an unseeded shuffle cannot be replayed on resume; "
                "set the same seed on every rank"
            )
        with self._lock:
            cursor, position = self._resume or self._cursor, self._position
            if self._resume is not None:
                position = None
            elif self._completed:
                cursor, position = Cursor(epoch=cursor.epoch + 1), None  # the next pass
            return resume.save(cursor, position, self.config, self._split)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Stop any pass; the next `start()`, `get_sample()` or loop resumes at `state`.

        Raises:
            ConfigError: the state was saved with another config or split (the message
                names the part that differs), or is not a state.
        """
        seed = state.get("seed")
        if seed is not None and seed != _seed_of(self.config):
            if self._user_seed:
                raise ConfigError(
                    f"this state was saved with another source_config.seed: {seed!r}, "
                    f"not {_seed_of(self.config)!r}"
                )
            self.config = _with_seed(self.config, seed)  # the seed the saving client picked
        cursor = resume.load(state, self.config, self._split)
        with self._lock:
            closing = self._detach_pass()
            self._pass = None
            self._resume = cursor
        closing()

    def _unwrap(self, current: Pass, item: Item) -> Sample | None:
        if isinstance(item, Delivery):
            self._stats.delivered()
            with self._lock:
                if current is self._pass:  # not a sample of a pass stopped since
                    cursor = self._cursor
                    if item.resume_at > cursor.position:  # consumers race here
                        self._position = item.position
                    position = max(cursor.position, item.resume_at)
                    self._cursor = Cursor(
                        cursor.epoch, position, cursor.delivered + 1, cursor.source
                    )
            return item.sample
        with self._lock:
            if current is self._pass:
                self._finished = True
                self._completed = item is END
        if isinstance(item, Failed):
            error = item.error
            if isinstance(error, DatagoError):
                raise error
            raise LoaderError(f"the datago loader failed: {error!r}") from error
        assert item is END
        return None


def _parse(config: str | Mapping[str, Any] | ClientConfig) -> ClientConfig | ConfigError:
    """The parsed config, or, for JSON text (the wheel's way), the `ConfigError` it raised:
    logged at ERROR now, as the wheel logs it, and raised later by our surface only."""
    try:
        if isinstance(config, ClientConfig):
            return config
        if isinstance(config, str):
            return ClientConfig.from_json(config)
        if isinstance(config, Mapping):
            return ClientConfig.from_dict(config)
        raise TypeError(f"config must be JSON text, a dict or a ClientConfig, got {config!r}")
    except ConfigError as exc:
        if not isinstance(config, str):
            raise
        logger.error("%s; this client returns no samples (see client.error)", exc)
        return exc


def _nothing() -> None:
    pass


def _seed_of(config: ClientConfig) -> int | None:
    return getattr(config.source_config, "seed", None)


def _with_seed(config: ClientConfig, seed: int | None = None) -> ClientConfig:
    """Give a shuffling source a concrete seed, so its order can be replayed on resume."""
    source = config.source_config
    fields = {field.name for field in dataclasses.fields(source)}
    if "seed" not in fields or (getattr(source, "seed", None) is not None and seed is None):
        return config
    seed = seed if seed is not None else random.getrandbits(63)
    return dataclasses.replace(
        config, source_config=dataclasses.replace(cast(Any, source), seed=seed)
    )
