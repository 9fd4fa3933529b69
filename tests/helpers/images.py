"""Deterministic test images (photo-like, edge-heavy, huge), Pillow encoding and a PNG writer."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def photo(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A small photo-like image: a smooth colour field plus noise, deterministic per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    field = np.stack(
        [base[c] * 0.5 + 60 * np.sin(x / (7 + c) + y / (11 + seed % 5) + c) for c in range(3)],
        axis=-1,
    )
    noise = rng.normal(0, 12, (height, width, 3))
    rgb = np.clip(field + noise + 64, 0, 255).astype(np.uint8)
    image = Image.fromarray(rgb)
    if mode == "RGBA":
        alpha = np.clip(x * 255 / max(width - 1, 1), 0, 255).astype(np.uint8)
        image.putalpha(Image.fromarray(alpha))
    elif mode != "RGB":
        image = image.convert(mode)
    return image


def photo_like(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An (H, W, 3) uint8 image that compresses and resamples like a photo."""
    rng = np.random.default_rng(seed)

    def field(cells_x: int, cells_y: int, amplitude: float) -> np.ndarray:
        small = rng.uniform(-amplitude, amplitude, (cells_y, cells_x, 3)).astype(np.float32)
        planes = [
            np.asarray(
                Image.fromarray(small[:, :, c], "F").resize(
                    (width, height), Image.Resampling.BICUBIC
                )
            )
            for c in range(3)
        ]
        stacked: np.ndarray = np.stack(planes, axis=2)
        return stacked

    pixels = 128 + field(4, 3, 90) + field(24, 18, 30) + field(width // 4, height // 4, 12)
    pixels += rng.normal(0, 3.0, (height, width, 1)).astype(np.float32)
    image: np.ndarray = np.clip(pixels, 0, 255).astype(np.uint8)
    return image


def line_art(width: int, height: int, seed: int = 0) -> np.ndarray:
    """An (H, W, 3) uint8 image of hard edges: flat rectangles crossed by 1-3 px black lines."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for _ in range(60):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(5, width // 3)), int(rng.integers(5, height // 3))
        draw.rectangle((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    for _ in range(80):
        ends = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(2)]
        draw.line(ends, fill=(0, 0, 0), width=int(rng.integers(1, 4)))
    return np.asarray(image)


def encode(image: Image.Image | np.ndarray, fmt: str = "JPEG", **params: object) -> bytes:
    """Encode a Pillow image, or an HWC (or HW) array, with Pillow."""
    if isinstance(image, np.ndarray):
        array = image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image
        image = Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def small_jpeg(seed: int) -> bytes:
    """A 24x16 photo as JPEG (quality 90): a typical webdataset image member."""
    return encode(photo(24, 16, seed=seed), "JPEG", quality=90)


def small_png(seed: int) -> bytes:
    """A 20x12 photo as PNG."""
    return encode(photo(20, 12, seed=seed), "PNG")


CLEAN_JPEG = encode(photo_like(64, 48), quality=90)
_DQT = CLEAN_JPEG.find(b"\xff\xdb")
IMPERFECT_JPEGS = {  # variants of CLEAN_JPEG that simplejpeg refuses and Pillow decodes
    "no end marker": CLEAN_JPEG[:-2],
    "padding for an end marker": CLEAN_JPEG[:-2] + bytes(16),
    "stray bytes before a marker": CLEAN_JPEG[:_DQT] + b"\x00\x17\x2a" + CLEAN_JPEG[_DQT:],
}


def png_bytes(pixels: np.ndarray, trns: bytes | None = None) -> bytes:
    """A PNG written with zlib alone (no filter): HWC uint8 or uint16, 1-4 channels."""
    height, width, channels = pixels.shape
    samples = pixels.astype(pixels.dtype.newbyteorder(">")).reshape(height, -1).view(np.uint8)
    rows = np.concatenate([np.zeros((height, 1), np.uint8), samples], axis=1)
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    return png_file(width, height, 8 * pixels.itemsize, colour_type, rows.tobytes(), trns)


ADAM7_PASSES = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
"""(first column, first row, column step, row step) of each Adam7 pass."""


def interlaced_png(pixels: np.ndarray, trns: bytes | None = None) -> bytes:
    """`png_bytes`, Adam7-interlaced: the seven passes' rows, each led by a 0 filter byte."""
    height, width, channels = pixels.shape
    samples = pixels.astype(pixels.dtype.newbyteorder(">"))
    rows = b""
    for x0, y0, dx, dy in ADAM7_PASSES:
        reduced = np.ascontiguousarray(samples[y0::dy, x0::dx])
        if reduced.size:
            lines = reduced.reshape(reduced.shape[0], -1).view(np.uint8)
            rows += np.concatenate([np.zeros((len(lines), 1), np.uint8), lines], axis=1).tobytes()
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    return png_file(width, height, 8 * pixels.itemsize, colour_type, rows, trns, interlace=1)


def png_file(
    width: int,
    height: int,
    bits: int,
    colour_type: int,
    rows: bytes,
    trns: bytes | None = None,
    *,
    interlace: int = 0,
) -> bytes:
    """A PNG of already filtered `rows` (each one led by its filter byte)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, bits, colour_type, 0, 0, interlace)
    extra = chunk(b"tRNS", trns) if trns is not None else b""
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + extra
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def file_id(path: str | Path) -> str:
    """The id the file source gives a file: its path as JSON text, as the Rust wheel."""
    return json.dumps(str(path), ensure_ascii=False)


def path_of(sample_id: str) -> str:
    """The path of a file source's sample id."""
    path: str = json.loads(sample_id)
    return path


def write_images(folder: Path, count: int, start: int = 0) -> list[str]:
    """`count` images (JPEG and PNG alternating, various sizes); returns their ids (`file_id`),
    sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        image = photo(40 + 7 * (i % 5), 30 + 5 * (i % 4), seed=i)
        ext = "jpg" if i % 2 == 0 else "png"
        path = folder / f"img_{i:04d}.{ext}"
        image.save(path, quality=90) if ext == "jpg" else image.save(path)
        paths.append(file_id(path))
    return sorted(paths)


def big_jpegs(folder: Path, count: int) -> list[str]:
    """`count` copies of one 4000x3000 (12 MP, ~3 MB) JPEG, each ~0.15 s to decode; returns
    their ids (`file_id`), sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    data = encode(coarse.resize((4000, 3000), Image.Resampling.BICUBIC), quality=90)
    for i in range(count):
        (folder / f"huge_{i:02d}.jpg").write_bytes(data)
    return sorted(file_id(p) for p in folder.glob("huge_*.jpg"))
