"""Shape-bucketed batches: the grouping rules, and real batches from DatagoIterDataset."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

from datago import DatagoClient  # noqa: E402
from datago.imaging.buckets import BucketTable  # noqa: E402
from datago.torch import DatagoIterDataset  # noqa: E402
from datago.torch_batching import ShapeBatcher  # noqa: E402
from tests.helpers import file_config, file_id, path_of, photo  # noqa: E402

SIZES = [(40, 30), (30, 40), (32, 32)]  # (width, height)
RGB_COUNT = 20  # 7 + 7 + 6 per size
GRAY_COUNT = 3  # 40x30 but one channel: a batch of its own


def run(batcher: ShapeBatcher[str], items: list[tuple[str, str]]) -> list[list[str]]:
    out = [batch for key, item in items if (batch := batcher.add(key, item)) is not None]
    return out + list(batcher.flush())


def test_batcher_emits_full_batches_then_leftovers_oldest_first() -> None:
    items = [("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1"), ("a", "a3"), ("b", "b2")]
    assert run(ShapeBatcher(3), items) == [["a1", "a2", "a3"], ["b1", "b2"], ["c1"]]


def test_batcher_drop_last_drops_and_counts_leftovers() -> None:
    batcher = ShapeBatcher[str](2, drop_last=True)
    items = [("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1")]
    assert run(batcher, items) == [["a1", "a2"]]
    assert batcher.dropped == 2


@pytest.mark.parametrize("drop_last", [False, True])
def test_batcher_evicts_the_oldest_batch_beyond_max_open(drop_last: bool) -> None:
    batcher = ShapeBatcher[str](3, drop_last=drop_last, max_open=2)
    items = [("a", "a1"), ("b", "b1"), ("b", "b2"), ("c", "c1"), ("b", "b3"), ("c", "c2")]
    expected = [["a1"], ["b1", "b2", "b3"], ["c1", "c2"]]
    assert run(batcher, items) == ([expected[1]] if drop_last else expected)
    assert batcher.dropped == (3 if drop_last else 0)


@pytest.fixture
def sized_dir(tmp_path: Path) -> tuple[Path, dict[str, tuple[int, int, int]]]:
    """23 files of 4 shapes; returns the folder and each id's (height, width, channels)."""
    shapes = {}
    for i in range(RGB_COUNT):
        width, height = SIZES[i % len(SIZES)]
        path = tmp_path / f"rgb_{i:02d}.{'png' if i % 2 else 'jpg'}"
        photo(width, height, seed=i).save(path)
        shapes[file_id(path)] = (height, width, 3)
    for i in range(GRAY_COUNT):
        path = tmp_path / f"gray_{i}.png"
        photo(40, 30, seed=100 + i, mode="L").save(path)
        shapes[file_id(path)] = (30, 40, 1)
    return tmp_path, shapes


def batches_of(dataset: DatagoIterDataset, num_workers: int = 0) -> list[dict[str, Any]]:
    return list(DataLoader(dataset, batch_size=None, num_workers=num_workers))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_batches_hold_one_shape_with_the_file_pixels(
    sized_dir: tuple[Path, dict[str, tuple[int, int, int]]], num_workers: int
) -> None:
    root, shapes = sized_dir
    batches = batches_of(DatagoIterDataset(file_config(root), batch_size=4), num_workers)
    seen = []
    for batch in batches:
        image, ids = batch["image"], batch["id"]
        assert isinstance(image, torch.Tensor) and isinstance(ids, list)
        assert image.dtype == torch.uint8
        assert 1 <= len(ids) <= 4
        for key in ("source", "attributes", "original_size", "masks", "tags", "latents"):
            assert len(batch[key]) == len(ids)
        height, width, channels = shapes[ids[0]]
        assert image.shape == (len(ids), channels, height, width)
        for index, id_ in enumerate(ids):
            assert shapes[id_] == (height, width, channels)
            with Image.open(path_of(id_)) as reference:
                expected = np.asarray(reference)
            expected = expected[:, :, None] if expected.ndim == 2 else expected
            np.testing.assert_array_equal(image[index].permute(1, 2, 0).numpy(), expected)
        seen += ids
    assert sorted(seen) == sorted(shapes)  # every sample once
    if num_workers == 0:  # one batcher: full batches, then one partial per shape
        sizes = sorted(len(batch["id"]) for batch in batches)
        assert sizes == [2, 3, 3, 3, 4, 4, 4]  # 7, 7, 6 RGB and 3 gray


def test_drop_last_yields_only_full_batches_and_logs_the_dropped_count(
    sized_dir: tuple[Path, dict[str, tuple[int, int, int]]], caplog: pytest.LogCaptureFixture
) -> None:
    root, shapes = sized_dir
    caplog.set_level(logging.INFO, logger="datago.torch")
    dataset = DatagoIterDataset(file_config(root), batch_size=4, drop_last=True)
    batches = batches_of(dataset)
    assert [len(batch["id"]) for batch in batches] == [4, 4, 4]
    dropped = [r.getMessage() for r in caplog.records if r.name == "datago.torch"]
    assert dropped == ["drop_last: 11 samples of partial batches dropped"]  # 23 - 12
    per_shape = Counter(shapes[batch["id"][0]] for batch in batches)
    assert per_shape == Counter((h, w, 3) for w, h in SIZES)


def test_hwc_layout_and_a_limit(sized_dir: tuple[Path, dict[str, tuple[int, int, int]]]) -> None:
    root, shapes = sized_dir
    dataset = DatagoIterDataset(file_config(root, limit=10), batch_size=3, layout="hwc")
    batches = batches_of(dataset, num_workers=2)
    assert sum(len(batch["id"]) for batch in batches) == 10
    for batch in batches:
        ids = batch["id"]
        assert batch["image"].shape == (len(ids), *shapes[ids[0]])


def test_crop_and_resize_batches_by_aspect_bucket(tmp_path: Path) -> None:
    image_config = {
        "crop_and_resize": True,
        "default_image_size": 64,
        "downsampling_ratio": 16,
        "min_aspect_ratio": 0.5,
        "max_aspect_ratio": 2.0,
    }
    for i, (width, height) in enumerate([(90, 60), (60, 90), (70, 70), (120, 50), (80, 64)] * 3):
        photo(width, height, seed=i).save(tmp_path / f"img_{i:02d}.jpg", quality=90)
    config = file_config(tmp_path, image_config=image_config)
    with DatagoClient(config) as client:
        expected = {sample.id: sample.image.to_numpy() for sample in client}
    buckets = set(BucketTable.build(64, 16, 0.5, 2.0).sizes.values())
    batches = batches_of(DatagoIterDataset(config, batch_size=3), num_workers=2)
    seen = []
    for batch in batches:
        image, ids = batch["image"], batch["id"]
        assert isinstance(image, torch.Tensor) and isinstance(ids, list)
        assert (image.shape[3], image.shape[2]) in buckets
        for index, id_ in enumerate(ids):
            np.testing.assert_array_equal(image[index].permute(1, 2, 0).numpy(), expected[id_])
        seen += ids
    assert sorted(seen) == sorted(expected)
    assert len({tuple(batch["image"].shape[2:]) for batch in batches}) >= 3


def test_pre_encoded_images_are_decoded_into_the_batch(
    sized_dir: tuple[Path, dict[str, tuple[int, int, int]]],
) -> None:
    root, shapes = sized_dir
    config = file_config(root, image_config={"pre_encode_images": True, "encode_format": "png"})
    batches = batches_of(DatagoIterDataset(config, batch_size=8, layout="hwc"))
    for batch in batches:
        for index, id_ in enumerate(batch["id"]):
            with Image.open(path_of(id_)) as reference:
                expected = np.asarray(reference).reshape(shapes[id_])
            np.testing.assert_array_equal(batch["image"][index].numpy(), expected)
    assert sum(len(batch["id"]) for batch in batches) == len(shapes)


def test_channels_last_batches_are_chw_views_of_hwc_memory(
    sized_dir: tuple[Path, dict[str, tuple[int, int, int]]],
) -> None:
    root, shapes = sized_dir
    dataset = DatagoIterDataset(file_config(root), batch_size=4, layout="channels_last")
    seen = []
    for batch in batches_of(dataset, num_workers=2):
        image, ids = batch["image"], batch["id"]
        seen += ids
        height, width, channels = shapes[ids[0]]
        assert image.shape == (len(ids), channels, height, width)
        assert image.is_contiguous(memory_format=torch.channels_last)
        for index, id_ in enumerate(ids):
            with Image.open(path_of(id_)) as reference:
                expected = np.asarray(reference).reshape(shapes[id_])
            np.testing.assert_array_equal(image[index].permute(1, 2, 0).numpy(), expected)
    assert sorted(seen) == sorted(shapes)  # every sample once: no batch, no pass
