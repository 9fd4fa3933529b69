"""One measurement in a fresh process: `python -m benchmarks.measure SPEC_JSON` prints one
JSON line. The spec names the loader (`raw`, `torch`, `ours`), the datago config and the
folder; the harness in `benchmarks.run` builds it."""

from __future__ import annotations

import json
import sys
from typing import Any

from benchmarks.loaders import LOADERS
from benchmarks.timing import time_stream


def main() -> None:
    spec = json.loads(sys.argv[1])
    extras: dict[str, Any] = {}
    result = time_stream(LOADERS[spec["impl"]](spec, extras), spec.get("buckets"))
    print(json.dumps({**result, **extras}))


if __name__ == "__main__":
    main()
