"""The benchmark data sets, generated deterministically (seeded) with `datago.demo`.

Sets (as in the reference measurements, smaller): `jpg` ~1.2 MP photos at JPEG q90, `lowres`
~500x375 at q95, `png` ~1 MP, half RGB and half RGBA with a soft cut-out; each set can also be
packed as webdataset shards (`key.jpg` or `key.png`, `key.json`, `key.txt`). Images are written
once into benchmarks/data/run/pool-<set>/; a run of N images reads a folder of hard links to
the first N, so a quick run and a full run share their images.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from datago.demo import synthetic_photo

DATA = Path(__file__).parent / "data" / "run"
SHARD_SAMPLES = 50


@dataclass(frozen=True)
class ImageSet:
    """How the images of one set look: size classes (jittered by +-24 px), format, quality."""

    name: str
    sizes: tuple[tuple[int, int], ...]
    suffix: str
    quality: int = 90


LANDSCAPES = ((1280, 960), (1344, 896), (1152, 1024), (1536, 768))  # ~1.2 MP each
IMAGE_SETS = {
    "jpg": ImageSet("jpg", LANDSCAPES + tuple((h, w) for w, h in LANDSCAPES), "jpg"),
    "lowres": ImageSet(
        "lowres",
        ((500, 375), (375, 500), (500, 333), (333, 500), (480, 360), (500, 400), (512, 384)),
        "jpg",
        quality=95,
    ),
    "png": ImageSet("png", ((1152, 864), (864, 1152), (1024, 1024), (1280, 768)), "png"),
}


@dataclass(frozen=True)
class Prepared:
    """A data set ready to read: its image files (or shards) and their encoded size."""

    folder: Path
    files: list[Path]
    count: int
    image_bytes: int


def prepare_images(name: str, count: int) -> Prepared:
    """The first `count` images of a set in a folder of their own, generated if missing."""
    spec = IMAGE_SETS[name]
    pool = DATA / f"pool-{name}"
    pool.mkdir(parents=True, exist_ok=True)
    paths = [pool / f"{name}_{index:05d}.{spec.suffix}" for index in range(count)]
    missing = [(spec, index, path) for index, path in enumerate(paths) if not path.exists()]
    if missing:
        with ProcessPoolExecutor(os.cpu_count()) as workers:
            list(workers.map(_write_image, missing, chunksize=8))
    folder = DATA / f"{name}-{count}"
    folder.mkdir(exist_ok=True)
    files = []
    for path in paths:
        link = folder / path.name
        if not link.exists():
            os.link(path, link)
        files.append(link)
    return Prepared(folder, files, count, sum(path.stat().st_size for path in files))


def prepare_shards(images: Prepared) -> Prepared:
    """The images packed as webdataset tar shards of `SHARD_SAMPLES` samples."""
    folder = DATA / f"wds-{images.folder.name}"
    folder.mkdir(exist_ok=True)
    shards = []
    for first in range(0, images.count, SHARD_SAMPLES):
        shard = folder / f"shard-{first // SHARD_SAMPLES:06d}.tar"
        if not shard.exists():
            tmp = shard.with_suffix(".tmp")
            tmp.write_bytes(_shard_bytes(images.files[first : first + SHARD_SAMPLES]))
            tmp.rename(shard)
        shards.append(shard)
    return Prepared(folder, shards, images.count, images.image_bytes)


def shard_pattern(shards: Prepared) -> str:
    """The brace pattern of the shards, relative to the data folder (the server's root)."""
    last = len(shards.files) - 1
    return f"{shards.folder.name}/shard-{{000000..{last:06d}}}.tar"


def _shard_bytes(paths: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in paths:
            key = path.stem
            with Image.open(path) as image:
                width, height = image.size
            caption = f"a synthetic photo, {width}x{height}"
            meta = {"key": key, "width": width, "height": height, "caption": caption}
            members = {
                path.suffix[1:]: path.read_bytes(),
                "json": json.dumps(meta).encode(),
                "txt": caption.encode(),
            }
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _write_image(job: tuple[ImageSet, int, Path]) -> None:
    spec, index, path = job
    rng = np.random.default_rng([sum(map(ord, spec.name)), index])
    base_w, base_h = spec.sizes[index % len(spec.sizes)]
    jitter = rng.integers(-24, 25, 2)
    image = synthetic_photo(int(base_w + jitter[0]), int(base_h + jitter[1]), rng)
    if spec.suffix == "png" and index % 2 == 1:
        image.putalpha(_soft_cutout(image.size, rng))
    tmp = path.with_suffix(".tmp")
    fmt = "PNG" if spec.suffix == "png" else "JPEG"
    image.save(tmp, format=fmt, quality=spec.quality, compress_level=6)
    tmp.rename(path)


def _soft_cutout(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """An alpha mask: an opaque blob with a blurred edge on a transparent background."""
    width, height = size
    mask = Image.new("L", size, 0)
    inset_x, inset_y = (int(v) for v in rng.integers(width // 10, width // 4, 2))
    ImageDraw.Draw(mask).ellipse((inset_x, inset_y, width - inset_x, height - inset_y), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(radius=max(size) / 60))
