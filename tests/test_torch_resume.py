"""DatagoIterDataset resume: first k + resumed rest == one uninterrupted run."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from datago import ConfigError  # noqa: E402
from datago.torch import DatagoIterDataset  # noqa: E402
from tests.helpers import (  # noqa: E402
    Server,
    file_config,
    write_images,
    write_noisy_shards,
    write_shards,
)


def interrupted(dataset: DatagoIterDataset, k: int) -> tuple[list[str], Any]:
    """The first k ids through a DataLoader, and the state saved (as JSON) right after."""
    loader = iter(DataLoader(dataset, batch_size=None))
    first = [sample.id for sample in itertools.islice(loader, k)]
    return first, json.loads(json.dumps(dataset.state_dict()))


def resumed(config: dict[str, Any], state: Any, **kwargs: Any) -> list[str]:
    dataset = DatagoIterDataset(config, **kwargs)
    dataset.load_state_dict(state)
    return [item.id if hasattr(item, "id") else item["id"] for item in dataset]


@pytest.mark.parametrize("random_sampling", [False, True])
@pytest.mark.parametrize("k", [0, 1, 7, 11, 12])
def test_num_workers_0_resumes_the_exact_sequence(
    tmp_path: Path, random_sampling: bool, k: int
) -> None:
    write_images(tmp_path, 12)
    config = file_config(tmp_path, random_sampling=random_sampling, seed=3)
    whole = [sample.id for sample in DatagoIterDataset(config)]
    first, state = interrupted(DatagoIterDataset(config), k)
    assert first + resumed(config, state) == whole
    assert len(whole) == 12


def test_an_unseeded_shuffle_resumes_with_the_seed_in_the_state(tmp_path: Path) -> None:
    write_images(tmp_path, 12)
    config = file_config(tmp_path, random_sampling=True)
    dataset = DatagoIterDataset(config)
    loader = iter(DataLoader(dataset, batch_size=None))
    first = [sample.id for sample in itertools.islice(loader, 5)]
    state = dataset.state_dict()
    rest = [sample.id for sample in loader]
    assert resumed(config, state) == rest
    assert len(first + rest) == len(set(first + rest)) == 12


def test_the_state_carries_the_epoch_and_the_limit(tmp_path: Path) -> None:
    write_images(tmp_path, 12)
    config = file_config(tmp_path, random_sampling=True, seed=5, limit=9)
    dataset = DatagoIterDataset(config)
    dataset.set_epoch(2)
    whole = [sample.id for sample in dataset]
    first, state = interrupted(dataset, 4)
    assert state["epoch"] == 2
    assert first + resumed(config, state) == whole  # no set_epoch: the state's epoch
    assert whole != [sample.id for sample in DatagoIterDataset(config)]  # epoch 0 differs
    assert len(whole) == 9


def test_resuming_a_finished_pass_yields_nothing_then_a_new_pass(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 6)
    dataset = DatagoIterDataset(file_config(tmp_path))
    assert sorted(sample.id for sample in dataset) == paths
    state = dataset.state_dict()
    assert state["finished"]
    again = DatagoIterDataset(file_config(tmp_path))
    again.load_state_dict(state)
    assert list(again) == []
    assert sorted(sample.id for sample in again) == paths


def test_before_any_iteration_the_state_is_the_start_of_the_epoch(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 6)
    dataset = DatagoIterDataset(file_config(tmp_path))
    dataset.set_epoch(1)
    state = dataset.state_dict()
    assert (state["epoch"], state["client"], state["finished"]) == (1, None, False)
    assert sorted(resumed(file_config(tmp_path), state)) == paths
    _, midway = interrupted(DatagoIterDataset(file_config(tmp_path)), 2)
    dataset.load_state_dict(midway)
    assert dataset.state_dict() == midway  # loaded, not started yet
    assert dataset.epoch == 0
    dataset.set_epoch(3)  # another epoch: the loaded state is dropped
    assert dataset.state_dict() == {"epoch": 3, "part": None, "client": None, "finished": False}


def test_webdataset_with_python_types_resumes_the_exact_sequence(tmp_path: Path) -> None:
    url, keys = write_shards(tmp_path, shards=3, per_shard=5)
    config = {"source_type": "webdataset", "source_config": {"url": url}}
    dataset = DatagoIterDataset(config, return_python_types=True)
    whole = [item["id"] for item in dataset]
    loader = iter(DataLoader(dataset, batch_size=None))
    first = [item["id"] for item in itertools.islice(loader, 6)]
    rest = resumed(config, dataset.state_dict(), return_python_types=True)
    assert first + rest == whole
    assert sorted(whole) == keys


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")  # torchdata 0.11 on torch 2.13
@pytest.mark.parametrize("k", [0, 5, 13, 21])  # k + 3 <= 24: no stage sees the end
def test_stateful_dataloader_workers_resume_the_rest_twice(
    image_dir: tuple[Path, list[str]], k: int
) -> None:
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    root, paths = image_dir
    config = file_config(root, random_sampling=True, seed=11)
    seen: list[str] = []
    state: Any = None
    for take in (k, 3, None):  # interrupted after k, resumed, interrupted 3 later, resumed
        loader = stateful.StatefulDataLoader(
            DatagoIterDataset(config), batch_size=None, num_workers=2
        )
        if state is not None:
            loader.load_state_dict(state)
        iterator = iter(loader)
        seen += [sample.id for sample in itertools.islice(iterator, take)]
        state = loader.state_dict()
        del iterator
    assert Counter(seen) == Counter(paths)  # every sample exactly once
    workers = state["_snapshot"]["_worker_snapshots"].values()  # torchdata's layout
    assert [w["dataset_state"]["part"] for w in workers] == [[0, 1, 0, 2], [0, 1, 1, 2]]


def test_a_resumed_run_resumes_again(tmp_path: Path) -> None:
    write_images(tmp_path, 12)
    config = file_config(tmp_path, random_sampling=True, seed=4)
    whole = [sample.id for sample in DatagoIterDataset(config)]
    first, state = interrupted(DatagoIterDataset(config), 3)
    again = DatagoIterDataset(config)
    again.load_state_dict(state)
    assert again.state_dict() == state
    second, state = interrupted(again, 4)
    assert first + second + resumed(config, state) == whole


def test_state_dict_raises_where_the_state_is_in_plain_dataloader_workers(
    tmp_path: Path,
) -> None:
    paths = write_images(tmp_path, 6)
    dataset = DatagoIterDataset(file_config(tmp_path))
    assert sorted(s.id for s in DataLoader(dataset, batch_size=None, num_workers=2)) == paths
    with pytest.raises(RuntimeError, match="StatefulDataLoader"):
        dataset.state_dict()


def test_a_state_of_another_split_is_refused(tmp_path: Path) -> None:
    write_images(tmp_path, 6)
    dataset = DatagoIterDataset(file_config(tmp_path))
    _, state = interrupted(dataset, 2)
    workers = DatagoIterDataset(file_config(tmp_path))
    workers.load_state_dict(state)
    with pytest.raises(ConfigError, match="resume with the same split"):
        list(DataLoader(workers, batch_size=None, num_workers=2))


def test_batches_and_unseeded_split_shuffles_are_not_resumable(tmp_path: Path) -> None:
    write_images(tmp_path, 6)
    batched = DatagoIterDataset(file_config(tmp_path), batch_size=2)
    with pytest.raises(ConfigError, match="batch_size=None"):
        batched.state_dict()
    with pytest.raises(ConfigError, match="batch_size=None"):
        batched.load_state_dict({"epoch": 0, "part": None, "client": None, "finished": False})
    dataset = DatagoIterDataset(file_config(tmp_path, random_sampling=True, world_size=2))
    iterator = iter(dataset)
    next(iterator)
    with pytest.raises(ConfigError, match=r"needs source_config\.seed"):
        dataset.state_dict()
    iterator.close()  # type: ignore[attr-defined]


@pytest.mark.filterwarnings("ignore:'set_vital' is deprecated")  # torchdata 0.11 on torch 2.13
def test_stateful_dataloader_workers_resume_by_seeking(tmp_path: Path) -> None:
    stateful = pytest.importorskip("torchdata.stateful_dataloader")
    files = write_noisy_shards(tmp_path, 6, 50)  # 3 shards per worker
    pattern = "shard-{000..005}.tar"

    def loader(base: str) -> Any:
        config = {"source_type": "webdataset", "source_config": {"url": base + pattern}}
        return stateful.StatefulDataLoader(
            DatagoIterDataset(config), batch_size=None, num_workers=2
        )

    with Server.files(files) as server:
        first = loader(server.url)
        iterator = iter(first)
        seen = [sample.id for sample in itertools.islice(iterator, 270)]
        state = json.loads(json.dumps(first.state_dict()))
        del iterator
    workers = state["_snapshot"]["_worker_snapshots"].values()
    assert all(w["dataset_state"]["client"]["source"]["slots"] for w in workers)
    with Server.files(files) as server:
        again = loader(server.url)
        again.load_state_dict(state)
        rest = [sample.id for sample in again]
    assert Counter(seen + rest) == Counter(f"s{i:04d}" for i in range(300))
    assert len(rest) == 30
    assert server.sent() <= 0.2 * sum(map(len, files.values()))
