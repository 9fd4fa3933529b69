"""Which decoder per format: every installed candidate on 1 and 2 threads, from memory.

    python -m benchmarks.bench_decoders [--seconds 2] [--rounds 3] [--count 30]

The images are the loader benchmark's own (`png`: ~1 MP RGB and RGBA; `jpg`: ~1.2 MP q90)
and, for WebP, the PNGs re-encoded by Pillow (lossy q90, and lossless). Each round measures
every (format, decoder, threads) once, so that load changes hit all of them alike; the table
gives medians of images/s and of process CPU ms per image, and the 2/1-thread ratio (2.0:
the decoder releases the GIL). A second table gives the cost of reading an image's size.
"""

from __future__ import annotations

import argparse
import importlib
import io
import statistics
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image

from benchmarks.bench_imaging import images_per_second
from benchmarks.datasets import prepare_images
from datago.imaging.codecs import webp_size

Work = Callable[[bytes], object]


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        print(f"({name} is not installed: its rows are left out)")
        return None


def pillow(blob: bytes) -> object:
    with Image.open(io.BytesIO(blob)) as image:
        return np.asarray(image)


def image_rs_decoder(module: Any, kind: str) -> Work:
    image_format = getattr(module.ImageFormat, kind)

    def decode(blob: bytes) -> object:
        info = module.read_image_info(blob, image_format)
        wide = info.dtype == np.uint16
        function = module.decode_uint16_image if wide else module.decode_uint8_image
        return function(blob, image_format, num_channels=info.num_channels)

    return decode


def candidates() -> dict[str, dict[str, Work]]:
    """format: {decoder: function} for what is installed here."""
    image_rs, codecs = _optional("image_rs"), _optional("imagecodecs")
    found: dict[str, dict[str, Work]] = {
        "png": {"Pillow": pillow},
        "webp lossy": {"Pillow": pillow},
        "webp lossless": {"Pillow": pillow},
        "jpeg": {"simplejpeg": simplejpeg.decode_jpeg, "Pillow": pillow},
    }
    if image_rs is not None:
        found["png"]["image-rs"] = image_rs_decoder(image_rs, "PNG")
        found["webp lossy"]["image-rs"] = image_rs_decoder(image_rs, "WEBP")
        found["webp lossless"]["image-rs"] = image_rs_decoder(image_rs, "WEBP")
        found["jpeg"]["image-rs"] = image_rs_decoder(image_rs, "JPEG")
    if codecs is not None:
        found["png"]["libpng (imagecodecs)"] = codecs.png_decode
        found["png"]["libspng (imagecodecs)"] = codecs.spng_decode
        found["webp lossy"]["libwebp (imagecodecs)"] = codecs.webp_decode
        found["webp lossless"]["libwebp (imagecodecs)"] = codecs.webp_decode
    return found


def blobs(count: int) -> dict[str, list[bytes]]:
    pngs = [path.read_bytes() for path in prepare_images("png", count).files]
    jpegs = [path.read_bytes() for path in prepare_images("jpg", count).files]
    lossy: list[bytes] = []
    lossless: list[bytes] = []
    for data in pngs:
        with Image.open(io.BytesIO(data)) as image:
            for out, params in ((lossy, {"quality": 90}), (lossless, {"lossless": True})):
                buffer = io.BytesIO()
                image.save(buffer, "WEBP", **params)
                out.append(buffer.getvalue())
    return {"png": pngs, "webp lossy": lossy, "webp lossless": lossless, "jpeg": jpegs}


def header_costs(sets: dict[str, list[bytes]]) -> list[str]:
    """Microseconds to read (width, height), per reader and format."""
    image_rs = _optional("image_rs")
    readers: dict[str, dict[str, Work]] = {
        "png": {"IHDR bytes (struct)": lambda b: struct.unpack(">II", b[16:24])},
        "webp lossy": {"RIFF header (webp_size)": webp_size},
        "jpeg": {"simplejpeg.decode_jpeg_header": simplejpeg.decode_jpeg_header},
    }
    for kind in readers:
        readers[kind]["PIL Image.open().size"] = lambda b: Image.open(io.BytesIO(b)).size
        if image_rs is not None:
            readers[kind]["image_rs.read_image_info"] = image_rs.read_image_info
    lines = ["| format | reader | us per image |", "|---|---|---|"]
    for kind, found in readers.items():
        for name, read in found.items():
            data = sets[kind]
            start = time.perf_counter()
            for index in range(2000):
                read(data[index % len(data)])
            lines.append(f"| {kind} | {name} | {(time.perf_counter() - start) / 2000 * 1e6:.1f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_decoders", description=__doc__
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count", type=int, default=30, help="images per format")
    args = parser.parse_args()
    sets, found = blobs(args.count), candidates()
    results: dict[tuple[str, str, int], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for kind, decoders in found.items():
            for name, work in decoders.items():
                for threads in (1, 2):
                    rate = images_per_second(work, sets[kind], threads, args.seconds)
                    results.setdefault((kind, name, threads), []).append(rate)
    lines = [
        "| format | decoder | img/s, 1 thread | img/s, 2 threads | 2/1 | CPU ms/img, 1 / 2 threads |",
        "|---|---|---|---|---|---|",
    ]
    for kind, decoders in found.items():
        for name in decoders:
            one = [statistics.median(v) for v in zip(*results[kind, name, 1], strict=True)]
            two = [statistics.median(v) for v in zip(*results[kind, name, 2], strict=True)]
            lines.append(
                f"| {kind} | {name} | {one[0]:.1f} | {two[0]:.1f} | {two[0] / one[0]:.2f} | "
                f"{one[1]:.1f} / {two[1]:.1f} |"
            )
    print("\n".join([*lines, "", *header_costs(sets)]))


if __name__ == "__main__":
    main()
