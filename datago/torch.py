"""`DatagoIterDataset`: datago as a torch `IterableDataset`, split by rank and DataLoader worker.

Use it with `DataLoader(dataset, batch_size=None)`. Only this module imports torch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from datago.client import DatagoClient
from datago.config import ClientConfig, Environment, usable_cpus
from datago.errors import ConfigError
from datago.imaging import PixelArray
from datago.sample import ImagePayload, Sample, python_types
from datago.sources.base import Partition
from datago.torch_batching import ShapeBatcher

__all__ = ["DatagoIterDataset"]

logger = logging.getLogger(__name__)

Layout = Literal["chw", "hwc", "channels_last"]
_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.uint16): torch.uint16}


class DatagoIterDataset(IterableDataset[Any]):
    """Samples of one datago config as a torch `IterableDataset`, split across ranks and
    DataLoader workers; see the guide's "torch" section."""

    def __init__(
        self,
        config: str | Mapping[str, Any] | ClientConfig,
        return_python_types: bool = False,
        batch_size: int | None = None,
        *,
        drop_last: bool = False,
        tensors: bool = False,
        layout: Layout = "chw",
        max_open_batches: int = 64,
        pin_memory: bool = False,
    ) -> None:
        self.config = _parse(config)
        if return_python_types and (tensors or batch_size is not None):
            raise ConfigError("return_python_types cannot be combined with tensors or batch_size")
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and batch_size is None:
            raise ConfigError("drop_last needs batch_size")
        if max_open_batches < 1:
            raise ConfigError(f"max_open_batches must be >= 1, got {max_open_batches}")
        if layout not in get_args(Layout):
            raise ConfigError(f"layout must be one of {get_args(Layout)}, got {layout!r}")
        if pin_memory and not torch.cuda.is_available():
            raise ConfigError("pin_memory=True needs CUDA, which is not available here")
        self.return_python_types = return_python_types
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.tensors = tensors
        self.layout: Layout = layout
        self.max_open_batches = max_open_batches
        self.pin_memory = pin_memory
        # [epoch, read in workers]: shared with the DataLoader's workers, persistent ones too.
        self._shared = torch.zeros(2, dtype=torch.int64)
        self._shared.share_memory_()  # type: ignore[no-untyped-call]
        self._shipped_ranks: tuple[int, int] | None = None  # resolved when pickled
        self._unpickled_in: int | None = None  # the process id that unpickled this copy
        self._resume: dict[str, Any] | None = None  # for the next iteration in this process
        self._state: dict[str, Any] | None = None  # of this process's iteration
        self._client: DatagoClient | None = None  # while that iteration reads

    @property
    def epoch(self) -> int:
        """The pass number given by `set_epoch` (0 before)."""
        return int(self._shared[0])

    def set_epoch(self, epoch: int) -> None:
        """Pass number: reshuffles `random_sampling` with a seed (as `DistributedSampler`).

        Call it before iterating the DataLoader; its workers, persistent ones too, see it.
        A state loaded for another epoch is dropped.
        """
        self._shared[0] = epoch
        if self._resume is not None and self._resume["epoch"] != epoch:
            self._resume = None

    def __len__(self) -> int:
        if self.config.limit is None or self.batch_size is not None:
            raise TypeError("len() needs a limit and no batch_size")
        return self.config.limit

    def __getstate__(self) -> dict[str, Any]:
        # A spawned DataLoader worker does not see this process's torch.distributed group.
        ranks = _ranks_of(self.config)
        return {**self.__dict__, "_shipped_ranks": ranks, "_state": None, "_client": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._unpickled_in = os.getpid()

    def _ranks(self) -> tuple[int, int]:
        """Resolved now, except in a DataLoader worker spawned with this dataset pickled in:
        there, those of the parent that pickled it (not of a launcher that pickled it earlier).
        """
        if get_worker_info() is not None and self._unpickled_in == os.getpid():
            assert self._shipped_ranks is not None
            return self._shipped_ranks
        return _ranks_of(self.config)

    def state_dict(self) -> dict[str, Any]:
        """Where this process's iteration stands, as plain values (JSON-ready); see above.

        `load_state_dict` with it, in a dataset of the same config and split, continues with
        exactly the samples not delivered yet. Before any iteration: the start of the epoch.
        """
        self._check_per_sample("state_dict()")
        state = self._resume or self._state  # a loaded state wins until an iteration takes it
        if self._resume is None and self._client is not None and state is not None:
            state = {**state, "client": self._client.state_dict()}
        elif state is None and get_worker_info() is None and self._shared[1]:
            raise RuntimeError(
                "this dataset was read in DataLoader workers, which hold the state: use "
                "num_workers=0, or torchdata's StatefulDataLoader (it gathers each worker's)"
            )
        return state or {"epoch": self.epoch, "part": None, "client": None, "finished": False}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """The next iteration in this process continues at `state`; sets its epoch."""
        self._check_per_sample("load_state_dict()")
        self._resume = dict(state)
        self._shared[0] = int(state["epoch"])

    def _check_per_sample(self, what: str) -> None:
        if self.batch_size is not None:
            raise ConfigError(
                f"{what} needs batch_size=None: samples waiting in open batches would be "
                "lost on resume (batch in the DataLoader or the training loop instead)"
            )

    def __iter__(self) -> Iterator[Any]:
        info = get_worker_info()
        if self.pin_memory and info is not None:
            raise RuntimeError(
                "pin_memory=True works with num_workers=0; with workers use "
                "DataLoader(pin_memory=True)"
            )
        workers = Partition(info.id, info.num_workers) if info is not None else Partition()
        environment = None  # read when the pass starts
        if info is not None:
            self._shared[1] = 1  # the main process holds no state of this iteration
            # Each worker process runs its own decode threads: share the cores between them
            # (unless DATAGO_MAX_TASKS says otherwise).
            cores = max(1, usable_cpus() // info.num_workers)
            environment = Environment.from_env(max_tasks=cores)
        ranks = self._ranks()
        self._client = None
        self._state = self._begin([*ranks, workers.index, workers.count])
        config = _part_config(self.config, ranks, workers)
        if config is None or self._state.get("finished"):
            self._state["finished"] = True
            return iter(())
        client = DatagoClient(config, workers=workers, environment=environment)
        if self._state["client"] is not None:
            client.load_state_dict(self._state["client"])
        elif epoch := self._state["epoch"]:
            client.load_state_dict({"epoch": epoch, "position": 0, "delivered": 0})
        return self._read(client)

    def _begin(self, part: list[int]) -> dict[str, Any]:
        """This iteration's first state: the loaded one, checked, or the start of the epoch."""
        state, self._resume = self._resume, None
        if state is None:
            return {"epoch": self.epoch, "part": part, "client": None, "finished": False}
        if state["part"] not in (None, part):
            raise ConfigError(
                f"this state is of [rank, world_size, worker, num_workers] {state['part']}, "
                f"not of {part}: resume with the same split"
            )
        return {**state, "part": part}

    def _read(self, client: DatagoClient) -> Iterator[Any]:
        self._client = client  # from the first next(): its state is then the iteration's
        try:
            yield from self._items(client)
            if self._client is client:  # not yet replaced by a newer iteration
                self._state = {**(self._state or {}), "client": None, "finished": True}
                self._client = None
        finally:
            client.close()  # stopped early, it still tells its place to state_dict()

    def _items(self, samples: Iterable[Sample]) -> Iterator[Any]:
        if self.return_python_types:
            return map(python_types, samples)
        if self.batch_size is None:
            if not self.tensors:
                return iter(samples)
            return (self._collate([(s, s.image.to_numpy())]) for s in samples)
        return self._batches(samples)

    def _batches(self, samples: Iterable[Sample]) -> Iterator[dict[str, Any]]:
        assert self.batch_size is not None
        batcher = ShapeBatcher[tuple[Sample, PixelArray]](
            self.batch_size, drop_last=self.drop_last, max_open=self.max_open_batches
        )
        for sample in samples:
            pixels = sample.image.to_numpy()
            batch = batcher.add((pixels.shape, pixels.dtype.str), (sample, pixels))
            if batch is not None:
                yield self._collate(batch, batched=True)
        for batch in batcher.flush():
            yield self._collate(batch, batched=True)
        if batcher.dropped:
            logger.info("drop_last: %d samples of partial batches dropped", batcher.dropped)

    def _collate(
        self, items: Sequence[tuple[Sample, PixelArray]], batched: bool = False
    ) -> dict[str, Any]:
        fields = [self._fields(sample) for sample, _ in items]
        image = to_tensor([pixels for _, pixels in items], self.layout, self.pin_memory)
        if not batched:
            return {**fields[0], "image": image[0]}
        return {"image": image, **{key: [f[key] for f in fields] for key in fields[0]}}

    def _fields(self, sample: Sample) -> dict[str, Any]:
        def tensor(payload: ImagePayload) -> torch.Tensor:
            return to_tensor([payload.to_numpy()], self.layout, self.pin_memory)[0]

        return {
            **_metadata(sample),
            "original_size": (sample.image.original_width, sample.image.original_height),
            "latents": {name: latent.data for name, latent in sample.latents.items()},
            "masks": {name: tensor(p) for name, p in sample.masks.items()},
            "additional_images": {name: tensor(p) for name, p in sample.additional_images.items()},
        }


def to_tensor(arrays: Sequence[PixelArray], layout: Layout, pin_memory: bool) -> torch.Tensor:
    """Stack same-shape (H, W, C) arrays into one tensor laid out as `layout`, in one copy.

    "channels_last" is the (N, H, W, C) tensor seen as (N, C, H, W): no transpose.
    """
    height, width, channels = arrays[0].shape
    hwc = layout != "chw"
    shape = (
        (len(arrays), height, width, channels) if hwc else (len(arrays), channels, height, width)
    )
    out = torch.empty(shape, dtype=_DTYPES[arrays[0].dtype], pin_memory=pin_memory)
    view = out.numpy()
    for index, pixels in enumerate(arrays):
        view[index] = pixels if hwc else pixels.transpose(2, 0, 1)
    return out.permute(0, 3, 1, 2) if layout == "channels_last" else out


def _metadata(sample: Sample) -> dict[str, Any]:
    return {
        "id": sample.id,
        "source": sample.source,
        "duplicate_state": sample.duplicate_state,
        "attributes": sample.attributes_dict,
        "tags": list(sample.tags),
        "coca_embedding": list(sample.coca_embedding),
    }


def _parse(config: str | Mapping[str, Any] | ClientConfig) -> ClientConfig:
    if isinstance(config, ClientConfig):
        return config
    if isinstance(config, str):
        return ClientConfig.from_json(config)
    return ClientConfig.from_dict(config)


def _ranks_of(config: ClientConfig) -> tuple[int, int]:
    """(rank, world_size): from the config, else torch.distributed, else RANK/WORLD_SIZE."""
    source = config.source_config
    if source.world_size > 1:
        return source.rank, source.world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world_size = (_env_int(name) for name in ("RANK", "WORLD_SIZE"))
        if not 0 <= rank < max(world_size, 1):
            raise ConfigError(f"environment RANK={rank} is not in [0, WORLD_SIZE={world_size})")
        return rank, world_size
    return 0, 1


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer") from None


def _part_config(
    config: ClientConfig, ranks: tuple[int, int], workers: Partition
) -> ClientConfig | None:
    """The config of one worker of one rank; None when its share of `limit` is 0."""
    rank, world_size = ranks
    source = config.source_config
    if world_size > 1 and source.world_size <= 1:
        source = dataclasses.replace(source, rank=rank, world_size=world_size)
    limit = config.limit
    if limit is not None:
        limit = limit // workers.count + (workers.index < limit % workers.count)
        if limit == 0:
            return None
    return dataclasses.replace(config, source_config=source, limit=limit)
