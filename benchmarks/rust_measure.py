"""One measurement of Rust datago; runs ONLY in its own venv (the import name is ours too):

    /opt/rust-datago/bin/python -P benchmarks/rust_measure.py SPEC_JSON

`-P` keeps the repository off the front of sys.path, so `datago` is the Rust wheel; the
repository is appended afterwards for `benchmarks.timing`. Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import datago


def stream(config: dict[str, Any]) -> Iterator[np.ndarray[Any, Any]]:
    """Every sample via `get_sample()` + `image.to_numpy_array()` (its numpy hand-over)."""
    client = datago.DatagoClient(json.dumps(config))
    while (sample := client.get_sample()) is not None:
        yield sample.image.to_numpy_array()


def main() -> None:
    spec = json.loads(sys.argv[1])
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    from benchmarks.timing import time_stream

    result = time_stream(stream(spec["config"]), spec.get("buckets"))
    print(json.dumps({**result, "loader_file": datago.__file__}))


if __name__ == "__main__":
    main()
