"""DatagoIterDataset in real torch DataLoaders: worker and rank splits, limit, item types."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from datago import ConfigError, DatagoClient, ImagePayload, Sample, SourceError  # noqa: E402
from datago.sample import LatentPayload, python_types  # noqa: E402
from datago.torch import DatagoIterDataset, Layout  # noqa: E402
from tests.helpers import (  # noqa: E402  # noqa: E402
    datago_threads,
    file_config,
    file_id,
    path_of,
    photo,
    sample_members,
    write_images,
    write_shards,
)


def ids_of(dataset: DatagoIterDataset, num_workers: int = 0) -> list[str]:
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers)
    return [sample.id for sample in loader]


def test_import_datago_does_not_import_torch() -> None:
    code = "import sys, datago; print('torch' in sys.modules)"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip() == "False"


@pytest.mark.parametrize("num_workers", [0, 1, 2])
def test_every_sample_exactly_once(image_dir: tuple[Path, list[str]], num_workers: int) -> None:
    root, paths = image_dir
    ids = ids_of(DatagoIterDataset(file_config(root)), num_workers)
    assert sorted(ids) == paths


@pytest.mark.parametrize(("limit", "num_workers"), [(7, 2), (1, 2), (24, 2), (50, 2), (5, 1)])
def test_limit_is_per_rank_and_exact_with_workers(
    image_dir: tuple[Path, list[str]], limit: int, num_workers: int
) -> None:
    root, paths = image_dir  # walk order is the sorted order here
    dataset = DatagoIterDataset(file_config(root, limit=limit))
    ids = ids_of(dataset, num_workers)
    assert sorted(ids) == paths[:limit]  # each worker takes the head of its part
    assert len(dataset) == limit


def test_a_worker_does_not_make_up_for_bad_samples_in_another_workers_part(
    tmp_path: Path,
) -> None:
    paths = write_images(tmp_path, 12)
    for bad in paths[0:4:2]:  # two of worker 0's six (every second file from the first)
        Path(path_of(bad)).write_bytes(b"not an image")
    dataset = DatagoIterDataset(file_config(tmp_path, limit=10))
    assert len(ids_of(dataset)) == 10
    ids = ids_of(dataset, num_workers=2)
    assert sorted(ids) == sorted(paths[4::2] + paths[1:10:2])  # 4 + 5: one short of 10


def test_len_needs_a_limit_and_no_batch_size(image_dir: tuple[Path, list[str]]) -> None:
    root, _ = image_dir
    assert len(DataLoader(DatagoIterDataset(file_config(root, limit=5)), batch_size=None)) == 5
    with pytest.raises(TypeError):
        len(DatagoIterDataset(file_config(root)))
    with pytest.raises(TypeError):
        len(DatagoIterDataset(file_config(root, limit=5), batch_size=2))


def test_env_rank_splits_without_process_group(
    image_dir: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, paths = image_dir
    monkeypatch.setenv("WORLD_SIZE", "3")
    parts = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        parts.append(ids_of(DatagoIterDataset(file_config(root)), num_workers=2))
    assert sorted(id_ for part in parts for id_ in part) == paths
    assert [len(part) for part in parts] == [8, 8, 8]


def test_env_rank_with_limit_gives_each_rank_its_limit(
    image_dir: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, _ = image_dir
    monkeypatch.setenv("WORLD_SIZE", "2")
    parts = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        parts.append(set(ids_of(DatagoIterDataset(file_config(root, limit=5)), num_workers=2)))
    assert [len(part) for part in parts] == [5, 5]
    assert not parts[0] & parts[1]


def test_config_rank_wins_over_env(
    image_dir: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, paths = image_dir
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    config = file_config(root, rank=1, world_size=2)
    with DatagoClient(config) as client:
        assert ids_of(DatagoIterDataset(config)) == [sample.id for sample in client]
    parts = [
        ids_of(DatagoIterDataset(file_config(root, rank=rank, world_size=2)), num_workers=2)
        for rank in range(2)
    ]
    assert [len(part) for part in parts] == [12, 12]
    assert sorted(parts[0] + parts[1]) == paths


@pytest.mark.filterwarnings("ignore:This DataLoader will create:UserWarning")  # 3 > 2 cores
@pytest.mark.parametrize("rank", [0, 1])
def test_a_rank_reads_the_same_samples_whatever_num_workers(tmp_path: Path, rank: int) -> None:
    paths = write_images(tmp_path, 10)
    config = file_config(tmp_path, rank=rank, world_size=2)
    parts = [sorted(ids_of(DatagoIterDataset(config), workers)) for workers in range(4)]
    assert parts == [paths[rank::2]] * 4  # equal counts on every rank: no DDP hang


def test_an_unpickled_dataset_takes_the_ranks_of_the_process_that_iterates_it(
    image_dir: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, paths = image_dir
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    dataset = DatagoIterDataset(file_config(root))
    assert len(ids_of(dataset)) == 12
    shipped = pickle.dumps(dataset)  # as a launcher ships it to the processes it starts
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert sorted(ids_of(pickle.loads(shipped))) == paths
    assert sorted(ids_of(pickle.loads(shipped), num_workers=2)) == paths


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_source_error_reaches_the_training_loop(tmp_path: Path, num_workers: int) -> None:
    dataset = DatagoIterDataset(file_config(tmp_path / "missing"))
    with pytest.raises(SourceError, match="does not exist"):
        ids_of(dataset, num_workers)


def test_webdataset_ranks_and_workers_with_python_types(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, keys = write_shards(tmp_path, shards=3, per_shard=5)
    config = {"source_type": "webdataset", "source_config": {"url": url}}
    monkeypatch.setenv("WORLD_SIZE", "2")
    items = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        dataset = DatagoIterDataset(config, return_python_types=True)
        items += list(DataLoader(dataset, batch_size=None, num_workers=2))
    assert sorted(item["id"] for item in items) == keys  # 4 parts of 3 shards: disjoint, complete
    for item in items:
        index = int(item["id"][1:])
        members = sample_members(index)
        assert item["attributes"] == {  # JSON text of each member's text, as the wheel
            ext: json.dumps(members[ext].decode()) for ext in ("json", "txt", "cls")
        }
        assert item["image"].size == (24, 16)


def test_bad_env_rank_raises(
    image_dir: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ConfigError, match="RANK=3"):
        list(DatagoIterDataset(file_config(image_dir[0])))
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ConfigError, match="RANK must be an integer"):
        list(DatagoIterDataset(file_config(image_dir[0])))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"drop_last": True}, "drop_last needs batch_size"),
        ({"batch_size": 2, "max_open_batches": 0}, "max_open_batches must be >= 1"),
        ({"return_python_types": True, "batch_size": 2}, "cannot be combined"),
        ({"return_python_types": True, "tensors": True}, "cannot be combined"),
        ({"layout": "nchw"}, "layout must be"),
        ({"pin_memory": True}, "needs CUDA"),
    ],
)
def test_bad_arguments_raise_at_construction(
    image_dir: tuple[Path, list[str]], kwargs: dict[str, object], message: str
) -> None:
    if kwargs.get("pin_memory") and torch.cuda.is_available():
        pytest.skip("CUDA is available: pinned memory works")
    with pytest.raises(ConfigError, match=message):
        DatagoIterDataset(file_config(image_dir[0]), **kwargs)  # type: ignore[arg-type]


def test_bad_config_raises_at_construction_and_starts_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="limit"):
        DatagoIterDataset(file_config(tmp_path, limit=0))
    DatagoIterDataset(file_config(tmp_path / "missing"))
    assert not datago_threads()


def test_early_break_closes_the_client(image_dir: tuple[Path, list[str]]) -> None:
    root, _ = image_dir
    iterator = iter(DatagoIterDataset(file_config(root, samples_buffer_size=2)))
    next(iterator)
    assert datago_threads()
    iterator.close()  # type: ignore[attr-defined]
    assert not datago_threads()
    for index, _ in enumerate(DataLoader(DatagoIterDataset(file_config(root)), batch_size=None)):
        if index == 2:
            break  # the no_thread_leak fixture checks that the loader's client closed


def test_early_break_with_workers_shuts_down_quickly(image_dir: tuple[Path, list[str]]) -> None:
    root, _ = image_dir
    loader = DataLoader(DatagoIterDataset(file_config(root)), batch_size=None, num_workers=2)
    start = time.monotonic()
    iterator = iter(loader)
    next(iterator)
    del iterator  # joins the worker processes
    assert time.monotonic() - start < 10


def test_set_epoch_reshuffles_a_seeded_pass(image_dir: tuple[Path, list[str]]) -> None:
    root, paths = image_dir
    dataset = DatagoIterDataset(file_config(root, random_sampling=True, seed=7))
    first, again = ids_of(dataset), ids_of(dataset)
    dataset.set_epoch(1)
    second = ids_of(dataset)
    assert first == again
    assert first != second
    assert sorted(first) == sorted(second) == paths


@pytest.mark.parametrize("context", ["fork", pytest.param("forkserver", marks=pytest.mark.slow)])
def test_set_epoch_reaches_persistent_workers(tmp_path: Path, context: str) -> None:
    paths = write_images(tmp_path, 12)
    dataset = DatagoIterDataset(file_config(tmp_path, random_sampling=True, seed=7))
    loader = DataLoader(
        dataset,
        batch_size=None,
        num_workers=2,
        persistent_workers=True,
        multiprocessing_context=context,
    )
    passes = []
    for epoch in (0, 1, 0):
        dataset.set_epoch(epoch)
        passes.append([sample.id for sample in loader])
    assert passes[0] != passes[1]
    assert passes[0] == passes[2]
    assert sorted(passes[0]) == sorted(passes[1]) == paths


def test_python_types_match_the_wheels_auto_convert(
    image_dir: tuple[Path, list[str]],
) -> None:
    root, paths = image_dir
    items = list(DatagoIterDataset(file_config(root, limit=4), return_python_types=True))
    assert [item["id"] for item in items] == paths[:4]
    for item in items:
        assert set(item) == {
            "id", "source", "duplicate_state", "attributes", "tags", "coca_embedding",
            "latents", "image", "masks", "additional_images",
        }  # fmt: skip
        with Image.open(path_of(item["id"])) as reference:
            np.testing.assert_array_equal(
                np.asarray(item["image"]), np.asarray(reference.convert("RGB"))
            )
    pixels = np.zeros((4, 6, 1), np.uint8)
    sample = Sample(
        id="a",
        source="s",
        attributes_dict={"caption": "a cat", "score": 0.5, "nested": {"k": [1, 2]}},
        masks={"m": ImagePayload.from_array(pixels)},
        latents={"vae": LatentPayload(b"\x00\x01\x02")},
        tags=["x"],
        coca_embedding=[0.25],
    )
    converted = python_types(sample)
    assert converted["attributes"] == {
        "caption": '"a cat"',
        "score": "0.5",
        "nested": '{"k":[1,2]}',
    }  # JSON text of each value, as the wheel
    assert converted["latents"] == {"vae": {"data": b"\x00\x01\x02", "len": 3}}
    assert converted["image"] is None
    assert converted["masks"]["m"].mode == "L"
    assert converted["masks"]["m"].size == (6, 4)
    assert (converted["tags"], converted["coca_embedding"]) == (["x"], [0.25])


@pytest.mark.parametrize("layout", ["chw", "hwc", "channels_last"])
def test_tensor_items_hold_the_file_pixels(
    image_dir: tuple[Path, list[str]], layout: Layout
) -> None:
    root, _ = image_dir
    dataset = DatagoIterDataset(file_config(root, limit=6), tensors=True, layout=layout)
    items = list(DataLoader(dataset, batch_size=None, num_workers=2))
    assert len(items) == 6
    for item in items:
        with Image.open(path_of(item["id"])) as reference:
            expected = np.asarray(reference.convert("RGB"))
        image = item["image"]
        assert image.dtype == torch.uint8
        assert image.is_contiguous() == (layout != "channels_last")
        pixels = image if layout == "hwc" else image.permute(1, 2, 0)
        np.testing.assert_array_equal(pixels.numpy(), expected)
        assert list(item["original_size"]) == [expected.shape[1], expected.shape[0]]


def test_sixteen_bit_images_become_uint16_tensors(tmp_path: Path) -> None:
    values = (np.arange(12 * 10, dtype=np.uint16).reshape(10, 12) * 500).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    photo(12, 10).save(tmp_path / "rgb.png")
    items = {item["id"]: item for item in DatagoIterDataset(file_config(tmp_path), tensors=True)}
    deep = items[file_id(tmp_path / "deep.png")]["image"]
    assert deep.dtype == torch.uint16
    assert deep.shape == (1, 10, 12)
    np.testing.assert_array_equal(deep[0].numpy(), values)
    assert items[file_id(tmp_path / "rgb.png")]["image"].shape == (3, 10, 12)
