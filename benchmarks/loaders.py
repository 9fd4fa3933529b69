"""The loaders compared, each a function `spec -> iterator of HWC uint8 arrays`.

Work done before the iterator is returned is untimed setup (the raw limit reads its bytes
there); everything inside the iterator (client construction, worker start, directory walk)
is timed.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image

from benchmarks.pillow_fit import fit_bucket
from datago import DatagoClient
from datago.imaging.buckets import BucketTable

# Imported before the timer, as every loader's modules are (open_source imports them lazily).
from datago.sources import dataroom, webdataset  # noqa: F401
from datago.storage import http  # noqa: F401

with contextlib.suppress(ImportError):  # obstore: absent where it has no wheel
    from datago.storage import object_store  # noqa: F401

Spec = dict[str, Any]
Pixels = np.ndarray[Any, Any]
THREADS = 2


def raw_limit(spec: Spec, extras: dict[str, Any]) -> Iterator[Pixels]:
    """In-memory decode (+ bucket resize) on a 2-thread pool: no IO, no hand-over.

    JPEG: simplejpeg, DCT-scaled to the bucket's cover size before a Pillow Lanczos resize;
    PNG: Pillow. The bytes are read before the timer starts.
    """
    blobs = [path.read_bytes() for path in image_files(spec)]
    table = bucket_table(spec)

    def work(blob: bytes) -> Pixels:
        return decode_raw(blob, table)

    def timed() -> Iterator[Pixels]:
        with ThreadPoolExecutor(THREADS) as pool:
            yield from pool.map(work, blobs)

    return timed()


def torch_loader(spec: Spec, extras: dict[str, Any]) -> Iterator[Pixels]:
    """torch DataLoader(batch_size=None, num_workers=2); workers decode with Pillow and return
    `torch.from_numpy(HWC)` (shared memory), as in the reference measurements."""
    import torch  # not installed on every Python the harness runs on

    dataset = PillowFiles(image_files(spec), bucket_table(spec))
    loader: Iterable[Any] = torch.utils.data.DataLoader(
        dataset,  # type: ignore[arg-type]  # map-style: __getitem__ and __len__
        batch_size=None,
        num_workers=THREADS,
    )
    for tensor in loader:
        yield tensor.numpy()


def datago_loader(spec: Spec, extras: dict[str, Any]) -> Iterator[Pixels]:
    """This package's `DatagoClient`; its `client.stats` go into `extras`."""
    with DatagoClient(spec["config"]) as client:
        for sample in client:
            yield sample.image.to_numpy()
        stats = client.stats
    extras.update(
        decoders=stats.decoders,
        read_s=stats.read_s,
        decode_s=stats.decode_s,
        transform_s=stats.transform_s,
        wait_s=stats.wait_s,
        skipped=stats.skipped,
        source_errors=stats.source_errors,
    )


LOADERS: dict[str, Callable[[Spec, dict[str, Any]], Iterator[Pixels]]] = {
    "raw": raw_limit,
    "torch": torch_loader,
    "ours": datago_loader,
}


class PillowFiles:
    """Image files decoded (and bucket-resized) by Pillow, one per item: a map-style dataset
    whose numpy arrays the DataLoader turns into tensors (`torch.from_numpy`)."""

    def __init__(self, paths: list[Path], table: BucketTable | None) -> None:
        self.paths, self.table = paths, table

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Pixels:
        with Image.open(self.paths[index]) as image:
            image.load()
            out = image if self.table is None else fit_bucket(image, self.table.choose(*image.size))
            return np.array(out)


def decode_raw(blob: bytes, table: BucketTable | None) -> Pixels:
    """One image from memory, the cheapest way this Python stack offers."""
    if blob[:3] != b"\xff\xd8\xff":
        with Image.open(io.BytesIO(blob)) as image:
            image.load()
            return np.asarray(
                image if table is None else fit_bucket(image, table.choose(*image.size))
            )
    if table is None:
        pixels: Pixels = simplejpeg.decode_jpeg(blob)
        return pixels
    height, width, _, _ = simplejpeg.decode_jpeg_header(blob)
    bucket = table.choose(width, height)
    scale = max(bucket[0] / width, bucket[1] / height)
    small = simplejpeg.decode_jpeg(
        blob, min_width=math.ceil(width * scale), min_height=math.ceil(height * scale)
    )
    return np.asarray(fit_bucket(Image.fromarray(small), bucket))


def image_files(spec: Spec) -> list[Path]:
    return sorted(Path(spec["folder"]).iterdir())


def bucket_table(spec: Spec) -> BucketTable | None:
    image = spec["config"].get("image_config")
    if image is None:
        return None
    return BucketTable.build(
        image["default_image_size"],
        image["downsampling_ratio"],
        image["min_aspect_ratio"],
        image["max_aspect_ratio"],
    )
