"""DatagoClient on the file source: data, limit, sharding, passes, errors."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datago import ClientClosedError, DatagoClient, SourceError
from tests.helpers import file_config, path_of, write_images


def test_every_image_delivered_once_with_pillow_pixels(image_dir: tuple[Path, list[str]]) -> None:
    root, paths = image_dir
    with DatagoClient(file_config(root)) as client:
        samples = list(client)
    assert sorted(s.id for s in samples) == paths
    for sample in samples:
        with Image.open(path_of(sample.id)) as reference:
            expected = np.asarray(reference.convert("RGB"))
        assert sample.source == "filesystem"
        assert sample.image.to_numpy().shape == expected.shape
        np.testing.assert_array_equal(sample.image.to_numpy(), expected)
        assert (sample.image.width, sample.image.height) == reference.size
        assert sample.image.to_pil().mode == "RGB"


def test_order_is_sorted_and_deterministic(image_dir: tuple[Path, list[str]]) -> None:
    root, paths = image_dir
    with DatagoClient(file_config(root)) as client:
        first = [s.id for s in client]
    with DatagoClient(file_config(root)) as client:
        second = [s.id for s in client]
    assert first == second
    assert sorted(first) == paths


@pytest.mark.parametrize("limit", [1, 5, 23, 24, 100])
def test_limit_is_exact(image_dir: tuple[Path, list[str]], limit: int) -> None:
    root, paths = image_dir
    with DatagoClient(file_config(root, limit=limit, samples_buffer_size=2)) as client:
        samples = list(client)
        assert client.get_sample() is None
    assert len(samples) == min(limit, len(paths))
    assert len({s.id for s in samples}) == len(samples)


def test_limit_counts_good_samples_only(tmp_path: Path) -> None:
    write_images(tmp_path, 10)
    for i in range(5):
        (tmp_path / f"broken_{i}.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with DatagoClient(file_config(tmp_path, limit=8)) as client:
        samples = list(client)
        stats = client.stats
    assert len(samples) == 8
    assert all("broken" not in s.id for s in samples)
    assert stats.samples == 8


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_ranks_are_disjoint_and_complete(
    image_dir: tuple[Path, list[str]], world_size: int
) -> None:
    root, paths = image_dir
    parts = []
    for rank in range(world_size):
        with DatagoClient(file_config(root, rank=rank, world_size=world_size)) as client:
            parts.append([s.id for s in client])
    every = [i for part in parts for i in part]
    assert sorted(every) == paths
    assert all(
        len(part) in (len(paths) // world_size, -(-len(paths) // world_size)) for part in parts
    )


def test_random_sampling_is_seedable(image_dir: tuple[Path, list[str]]) -> None:
    root, paths = image_dir

    def run(seed: int) -> list[str]:
        config = file_config(root, random_sampling=True, seed=seed)
        with DatagoClient(config) as client:
            return [s.id for s in client]

    assert run(1) == run(1)
    assert run(1) != run(2)
    assert sorted(run(3)) == paths
    assert run(1) != paths


def test_random_sampling_reshuffles_each_pass(image_dir: tuple[Path, list[str]]) -> None:
    root, _ = image_dir
    with DatagoClient(file_config(root, random_sampling=True, seed=5)) as client:
        first, second = [s.id for s in client], [s.id for s in client]
    assert first != second
    assert sorted(first) == sorted(second)


def test_get_sample_returns_none_after_end_until_start(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 3)
    with DatagoClient(file_config(tmp_path)) as client:
        got = [client.get_sample() for _ in range(3)]
        assert [s.id for s in got if s] == paths
        assert client.get_sample() is None
        assert client.get_sample() is None
        client.start()
        assert client.get_sample() is not None


def test_stop_then_start_begins_a_new_pass(image_dir: tuple[Path, list[str]]) -> None:
    root, paths = image_dir
    with DatagoClient(file_config(root, samples_buffer_size=2)) as client:
        first = client.get_sample()
        client.stop()
        assert client.get_sample() is None
        client.start()
        client.start()  # idempotent while running
        assert [s.id for s in client] == paths
    assert first is not None


def test_missing_root_path_raises_source_error(tmp_path: Path) -> None:
    with DatagoClient(file_config(tmp_path / "nope")) as client:
        with pytest.raises(SourceError, match="does not exist"):
            next(iter(client))
        assert client.get_sample() is None  # the failed pass is over


def test_empty_folder_ends_at_once(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with DatagoClient(file_config(tmp_path)) as client:
        assert client.get_sample() is None


def test_use_after_close_raises(tmp_path: Path) -> None:
    client = DatagoClient(file_config(tmp_path))
    client.close()
    client.close()
    with pytest.raises(ClientClosedError):
        client.get_sample()


def test_json_text_config_is_accepted(tmp_path: Path) -> None:
    import json

    paths = write_images(tmp_path, 4)
    with DatagoClient(json.dumps(file_config(tmp_path, limit=2))) as client:
        assert [s.id for s in client] == paths[:2]


def test_formats_and_extensions(tmp_path: Path) -> None:
    from tests.helpers import photo

    image = photo(20, 10, seed=3)
    image.save(tmp_path / "a.JPG", quality=95)
    image.save(tmp_path / "b.webp", lossless=True)
    image.save(tmp_path / "c.bmp")
    image.convert("P").save(tmp_path / "d.gif")
    image.save(tmp_path / "e.TIFF")
    image.save(tmp_path / "f.PNG")
    (tmp_path / "g.txt").write_text("x")
    (tmp_path / "dir.png").mkdir()
    with DatagoClient(file_config(tmp_path)) as client:
        samples = {Path(path_of(s.id)).name: s for s in client}
    assert sorted(samples) == ["a.JPG", "b.webp", "c.bmp", "d.gif", "e.TIFF", "f.PNG"]
    exact = np.asarray(image)
    for name in ("b.webp", "c.bmp", "e.TIFF", "f.PNG"):
        np.testing.assert_array_equal(samples[name].image.to_numpy(), exact)
    assert samples["d.gif"].image.to_numpy().shape == (10, 20, 4)  # GIF is RGBA, as upstream


def test_stats_snapshot_is_frozen(tmp_path: Path) -> None:
    write_images(tmp_path, 4)
    with DatagoClient(file_config(tmp_path)) as client:
        samples = list(client)
        snapshot = client.stats
        elapsed, delivered = snapshot.elapsed_s, snapshot.samples
        time.sleep(0.05)
        assert (snapshot.elapsed_s, snapshot.samples) == (elapsed, delivered)
        assert client.stats.elapsed_s >= elapsed + 0.05
    assert delivered == len(samples) == 4
    assert elapsed > 0
