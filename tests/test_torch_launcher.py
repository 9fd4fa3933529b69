"""A dataset built in a launcher and pickled into spawned processes that join a gloo group."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch.distributed as dist  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from datago.torch import DatagoIterDataset  # noqa: E402
from tests.helpers import file_config, free_port  # noqa: E402


def read_rank(rank: int, dataset: DatagoIterDataset, port: int, out: str) -> None:
    """One spawned rank: join the group, read in this process, then with 2 spawned workers."""
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        for workers in (0, 2):
            context = "spawn" if workers else None  # a worker that cannot see the group either
            loader = DataLoader(
                dataset, batch_size=None, num_workers=workers, multiprocessing_context=context
            )
            ids = [sample.id for sample in loader]
            Path(out, f"rank{rank}-{workers}.json").write_text(json.dumps(ids))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_of_a_launched_dataset_come_from_the_process_group(
    image_dir: tuple[Path, list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, paths = image_dir
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")
    dataset = DatagoIterDataset(file_config(root))  # built here, where no group exists
    port, spawn = free_port(), multiprocessing.get_context("spawn")
    ranks = [
        spawn.Process(target=read_rank, args=(r, dataset, port, str(tmp_path))) for r in (0, 1)
    ]
    for process in ranks:
        process.start()
    try:
        for process in ranks:
            process.join(60)
    finally:
        for process in ranks:
            process.kill()  # a no-op once exited; a hung rank must not outlive the test
    assert [process.exitcode for process in ranks] == [0, 0]
    for workers in (0, 2):
        parts = [json.loads((tmp_path / f"rank{r}-{workers}.json").read_text()) for r in (0, 1)]
        assert [len(part) for part in parts] == [12, 12]
        assert sorted(parts[0] + parts[1]) == paths  # disjoint and complete
