"""One rank of the torchrun test: read a folder through DatagoIterDataset, write the ids.

    python -m torch.distributed.run --nproc_per_node=N ... tests/torch_ddp_worker.py ROOT OUT WORKERS

The rank split can only come from the initialised gloo process group: the config has none,
and torchrun's RANK/WORLD_SIZE are falsified once the group is up.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch.distributed as dist
from torch.utils.data import DataLoader

from datago.torch import DatagoIterDataset


def main(root: str, out: str, num_workers: int) -> None:
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()
    os.environ.update(RANK="0", WORLD_SIZE="1")  # the env fallback alone would read everything
    config = {"source_type": "file", "source_config": {"root_path": root}}
    loader = DataLoader(DatagoIterDataset(config), batch_size=None, num_workers=num_workers)
    ids = [sample.id for sample in loader]
    Path(out, f"rank{rank}.json").write_text(json.dumps({"world_size": world_size, "ids": ids}))
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
