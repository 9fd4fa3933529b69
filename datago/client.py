"""`DatagoClient`: the sync facade (`get_sample`, iteration, `with`) and `async for`."""

from __future__ import annotations

import dataclasses
import random
import threading
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any, cast

from datago import resume
from datago.config import ClientConfig, Environment
from datago.engine import Cursor, Pass, start_pass
from datago.errors import ClientClosedError, ConfigError, DatagoError, LoaderError
from datago.sample import Sample
from datago.sink import END, Delivery, Failed, Item
from datago.sources import node_of
from datago.sources.base import Partition, Position, Split
from datago.stats import Stats


class DatagoClient:
    """Streams samples from the source the config names.

    Args:
        config: upstream's JSON config, as text or as a dict, or a parsed `ClientConfig`.
        workers: the torch DataLoader worker split within this rank (used by `datago.torch`).
        environment: the settings passes run with; None reads the environment variables
            when each pass starts (`Environment.from_env`).

    Raises:
        ConfigError: the config is invalid (the message names the key).

    Example:
        >>> with DatagoClient({"source_type": "file", "source_config": {"root_path": "imgs"},
        ...                    "limit": 10}) as client:
        ...     for sample in client:
        ...         pixels = sample.image.to_numpy()
    """

    def __init__(
        self,
        config: str | Mapping[str, Any] | ClientConfig,
        *,
        workers: Partition | None = None,
        environment: Environment | None = None,
    ) -> None:
        if isinstance(config, ClientConfig):
            self.config = config
        elif isinstance(config, str):
            self.config = ClientConfig.from_json(config)
        else:
            self.config = ClientConfig.from_dict(config)
        source = self.config.source_config
        self._split = Split(source.rank, max(source.world_size, 1), workers or Partition())
        self._environment = environment
        self._user_seed = getattr(source, "seed", None) is not None
        if self._split.part.count == 1:
            # A single reader may pick its own seed; parts of a split must share the user's.
            self.config = _with_seed(self.config)
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

    def start(self) -> None:
        """Start a pass; does nothing while one runs. After the end or `stop()`, a new pass."""
        with self._lock:
            if self._closed:
                raise ClientClosedError("this DatagoClient is closed")
            if self._pass is not None and not self._finished:
                return
            self._shutdown_pass()
            self._cursor = self._resume or Cursor(epoch=self._cursor.epoch + 1)
            self._resume, self._position = None, None
            self._pass = start_pass(
                self.config, self._stats, self._cursor, self._split, self._environment
            )
            self._finished = self._completed = False
            # Closes the pass when the client is garbage-collected; holds no reference to it.
            self._finalizer = weakref.finalize(self, self._pass.close)
            self._finalizer.atexit = False  # at exit the engine closes every pass in 1 s

    def stop(self) -> None:
        """Stop the current pass within a second; `start()` begins a new one."""
        with self._lock:
            self._shutdown_pass()

    def close(self) -> None:
        """Stop and release everything for good. Idempotent."""
        with self._lock:
            self._shutdown_pass()
            self._closed = True

    def _shutdown_pass(self) -> None:
        if self._finalizer is not None:
            self._finalizer()  # closes the pass once, and only once
            self._finished = True

    def __enter__(self) -> DatagoClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> DatagoClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading ---------------------------------------------------------------------------

    def get_sample(self, timeout: float | None = None) -> Sample | None:
        """The next sample; None at the end of the pass (call `start()` for another).

        Blocks, without using CPU, until a sample is ready. The first call starts a pass.

        Raises:
            LoaderError: the pass failed (e.g. `SourceError`); raised after every sample
                produced before the failure.
            TimeoutError: `timeout` seconds passed without a sample.
        """
        current = self._current_pass()
        if current is None:
            return None
        try:
            with self._stats.waiting():
                item = current.sink.get(timeout)
        except Exception as exc:  # queue.Empty
            raise TimeoutError(f"no sample within {timeout}s") from exc
        return self._unwrap(current, item)

    async def aget_sample(self) -> Sample | None:
        """`get_sample` for asyncio code: awaits without blocking the caller's loop."""
        current = self._current_pass()
        if current is None:
            return None
        with self._stats.waiting():
            item = await current.sink.aget()
        return self._unwrap(current, item)

    def __iter__(self) -> Iterator[Sample]:
        """Iterate one pass; a loop started after the end begins a new pass."""
        if self._finished or self._pass is None:
            self.start()
        while (sample := self.get_sample()) is not None:
            yield sample

    async def __aiter__(self) -> AsyncIterator[Sample]:
        """`async for sample in client`: one pass, as `__iter__`."""
        if self._finished or self._pass is None:
            self.start()
        while (sample := await self.aget_sample()) is not None:
            yield sample

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters and stage timings, summed over every pass."""
        return self._stats.snapshot()

    def _current_pass(self) -> Pass | None:
        if self._closed:
            raise ClientClosedError("this DatagoClient is closed")
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
            self._shutdown_pass()
            self._pass = None
            self._resume = cursor

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
