"""Deterministic test images (photo-like, edge-heavy) and a hand-written PNG encoder."""

from __future__ import annotations

import io
import math
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw


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


def encode(pixels: np.ndarray, fmt: str = "JPEG", **params: object) -> bytes:
    """Encode an HWC (or HW) array with Pillow."""
    array = pixels[:, :, 0] if pixels.ndim == 3 and pixels.shape[2] == 1 else pixels
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, fmt, **params)
    return buffer.getvalue()


def reference_bucket_resize(pixels: np.ndarray, bucket: tuple[int, int]) -> np.ndarray:
    """Upstream's two Lanczos3 passes as replicated with Pillow (resize, then fractional crop)."""
    height, width = pixels.shape[:2]
    target_w, target_h = bucket
    scale = max(target_w / width, target_h / height)
    cover = (math.floor(width * scale + 0.5), math.floor(height * scale + 0.5))  # as Rust rounds
    left, top = (cover[0] - target_w) / 2, (cover[1] - target_h) / 2
    image = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    resized = image.resize(cover, Image.Resampling.LANCZOS)
    box = (left, top, left + target_w, top + target_h)
    out = np.asarray(resized.resize(bucket, Image.Resampling.LANCZOS, box=box))
    return out[:, :, None] if out.ndim == 2 else out
