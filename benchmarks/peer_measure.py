"""One measurement of a peer loader, in the peers' own venv (DALI and webdataset, never ours):

    /opt/datago-peers/bin/python -P benchmarks/peer_measure.py SPEC_JSON

- `dali`: NVIDIA DALI on the CPU (`device_id=None`, 2 threads, batch 16): `fn.readers.file`
  + `fn.decoders.image` (RGB) and, for resize, `fn.resize` (Lanczos3, covering the bucket)
  + a centre `fn.crop`. Each file's bucket comes precomputed in the spec, fed in file order.
- `wds`: the `webdataset` library, `WebDataset(urls).decode("pil")` (+ the same Pillow bucket
  fit as the torch baseline) in a torch `DataLoader(batch_size=None, num_workers=2)`; each
  worker reads its share of the shards over HTTP (curl, the library's default).

`-P` keeps the repository off the front of sys.path; it is appended afterwards for
`benchmarks.timing` and `benchmarks.pillow_fit`, which need only numpy and Pillow.
Prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

Spec = dict[str, Any]
Pixels = np.ndarray[Any, Any]
THREADS = 2
DALI_BATCH = 16


def dali(spec: Spec) -> Iterator[Pixels]:
    """DALI's CPU pipeline over the folder, in file order; exactly `count` images."""
    from nvidia.dali import fn, pipeline_def, types

    files = [str(Path(spec["folder"]) / name) for name in spec["files"]]
    buckets = spec.get("file_buckets")

    def bucket_batches() -> Iterator[list[Pixels]]:
        """(height, width) per sample, batch by batch, wrapping round as the reader does."""
        assert buckets is not None
        index = 0
        while True:
            batch = [buckets[(index + i) % len(buckets)] for i in range(DALI_BATCH)]
            index += DALI_BATCH
            yield [np.array([h, w], np.float32) for w, h in batch]

    @pipeline_def(batch_size=DALI_BATCH, num_threads=THREADS, device_id=None)  # type: ignore[untyped-decorator]
    def pipeline() -> Any:
        encoded, _ = fn.readers.file(files=files, random_shuffle=False, name="reader")
        images = fn.decoders.image(encoded, device="cpu", output_type=types.RGB)
        if buckets is None:
            return images
        bucket = fn.external_source(source=bucket_batches())
        images = fn.resize(
            images, size=bucket, mode="not_smaller", interp_type=types.INTERP_LANCZOS3
        )
        return fn.crop(images, crop=bucket)

    def stream() -> Iterator[Pixels]:
        pipe = pipeline()
        pipe.build()
        left = len(files)
        while left > 0:
            (out,) = pipe.run()
            for index in range(min(left, len(out))):
                yield np.asarray(out.at(index))
            left -= len(out)

    return stream()


def webdataset(spec: Spec) -> Iterator[Pixels]:
    """The webdataset library in a 2-worker DataLoader, Pillow decode (+ bucket fit)."""
    import torch
    import webdataset as wds
    from PIL import Image

    from benchmarks.pillow_fit import fit_bucket

    suffix = spec["suffix"]
    buckets = spec.get("key_buckets")

    def pixels(sample: dict[str, Any]) -> Pixels:
        image: Image.Image = sample[suffix]
        if buckets is not None:
            image = fit_bucket(image, tuple(buckets[sample["__key__"]]))
        return np.asarray(image)

    dataset = wds.WebDataset(spec["urls"], shardshuffle=False, empty_check=False)
    dataset = dataset.decode("pil").map(pixels)
    for tensor in torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=THREADS):
        yield tensor.numpy()


def main() -> None:
    spec = json.loads(sys.argv[1])
    sys.path.append(str(Path(__file__).resolve().parent.parent))
    from benchmarks.timing import time_stream

    loader = {"dali": dali, "wds": webdataset}[spec["impl"]]
    result = time_stream(loader(spec), spec.get("buckets"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
