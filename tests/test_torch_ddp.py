"""A real torch.distributed run: torchrun with 2 and 3 gloo ranks on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from tests.helpers import free_port

WORKER = Path(__file__).with_name("torch_ddp_worker.py")


@pytest.mark.slow
@pytest.mark.parametrize(("ranks", "num_workers"), [(2, 2), (3, 0)])
def test_torchrun_ranks_read_disjoint_parts_that_cover_the_folder(
    image_dir: tuple[Path, list[str]], tmp_path: Path, ranks: int, num_workers: int
) -> None:
    root, paths = image_dir
    out = tmp_path / "out"
    out.mkdir()
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        str(WORKER), str(root), str(out), str(num_workers),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((out / f"rank{rank}.json").read_text()) for rank in range(ranks)]
    assert all(result["world_size"] == ranks for result in results)
    parts = [result["ids"] for result in results]
    assert sorted(id_ for part in parts for id_ in part) == paths  # disjoint and complete
    assert [len(part) for part in parts] == [len(paths) // ranks] * ranks
