"""A small, realistic, deterministic image dataset for the demo and the benchmarks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter

# (width, height) classes of a typical photo collection: landscape, portrait, square, panorama.
PHOTO_SIZES = [(1280, 960), (960, 1280), (1152, 1152), (1536, 768), (1024, 768), (768, 1152)]


def synthetic_photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A photo-like RGB image: smooth colour field, soft shapes, texture and sensor grain.

    It compresses like a photo (~0.25 bytes/pixel at JPEG q90), unlike pure noise or flat colour.
    """
    field = rng.uniform(20, 235, (3, 4, 3)).astype(np.uint8)
    image = Image.fromarray(field).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(4, 10))):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        w, h = rng.integers(width // 10, width // 2), rng.integers(height // 10, height // 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
        shape((int(x0), int(y0), int(x0 + w), int(y0 + h)), fill=colour)
    image = image.filter(ImageFilter.GaussianBlur(radius=max(width, height) / 400))
    texture = Image.fromarray(
        rng.normal(128, 40, (height // 6, width // 6)).clip(0, 255).astype(np.uint8)
    )
    detail = np.asarray(texture.resize((width, height), Image.Resampling.BILINEAR), np.float32)
    grain = rng.normal(0, 3, (height, width, 1)).astype(np.float32)
    pixels: NDArray[np.float32] = np.asarray(image, np.float32) + (detail[..., None] - 128) * 0.3
    return Image.fromarray((pixels + grain).clip(0, 255).astype(np.uint8))


def write_photos(
    folder: Path,
    count: int,
    *,
    seed: int = 0,
    sizes: list[tuple[int, int]] | None = None,
    png_every: int = 0,
    quality: int = 90,
) -> list[Path]:
    """Write `count` photos (every `png_every`-th as PNG, others JPEG); skip files that exist."""
    folder.mkdir(parents=True, exist_ok=True)
    sizes = sizes or PHOTO_SIZES
    paths = []
    for i in range(count):
        is_png = png_every > 0 and i % png_every == png_every - 1
        path = folder / f"photo_{i:05d}.{'png' if is_png else 'jpg'}"
        paths.append(path)
        if path.exists():
            continue
        rng = np.random.default_rng([seed, i])
        base_w, base_h = sizes[i % len(sizes)]
        jitter = rng.integers(-24, 25, 2)
        image = synthetic_photo(int(base_w + jitter[0]), int(base_h + jitter[1]), rng)
        tmp = path.with_suffix(".tmp")
        image.save(tmp, format="PNG" if is_png else "JPEG", quality=quality, compress_level=6)
        tmp.rename(path)
    return paths
