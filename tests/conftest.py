"""Shared fixtures: small real image folders written to tmp_path, and a thread-leak guard."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datago.config import FileSourceConfig
from datago.sources.base import RawSample, SourceContext, Split


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


def encode(image: Image.Image, fmt: str = "JPEG", **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def big_jpegs(folder: Path, count: int) -> list[str]:
    """`count` copies of one 4000x3000 (12 MP, ~3 MB) JPEG: each takes ~0.15 s to decode."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    coarse = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
    data = encode(coarse.resize((4000, 3000), Image.Resampling.BICUBIC), quality=90)
    for i in range(count):
        (folder / f"huge_{i:02d}.jpg").write_bytes(data)
    return sorted(str(p) for p in folder.glob("huge_*.jpg"))


def write_images(folder: Path, count: int, start: int = 0) -> list[str]:
    """`count` images (JPEG and PNG alternating, various sizes), returns their paths sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(start, start + count):
        image = photo(40 + 7 * (i % 5), 30 + 5 * (i % 4), seed=i)
        ext = "jpg" if i % 2 == 0 else "png"
        path = folder / f"img_{i:04d}.{ext}"
        image.save(path, quality=90) if ext == "jpg" else image.save(path)
        paths.append(str(path))
    return sorted(paths)


@pytest.fixture
def image_dir(tmp_path: Path) -> tuple[Path, list[str]]:
    """24 images in a folder and a subfolder."""
    root = tmp_path / "images"
    paths = write_images(root, 16) + write_images(root / "sub", 8, start=16)
    return root, sorted(paths)


def file_config(root: Path, **overrides: object) -> dict[str, object]:
    source = {"root_path": str(root)}
    config: dict[str, object] = {"source_type": "file", "source_config": source}
    for key, value in overrides.items():
        if key in ("random_sampling", "rank", "world_size", "seed"):
            source[key] = value  # type: ignore[assignment]
        else:
            config[key] = value
    return config


def datago_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("datago")]


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Every test must leave no datago thread behind (allowing a second to wind down)."""
    yield
    deadline = time.monotonic() + 1.0
    while datago_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not datago_threads(), f"leaked threads: {datago_threads()}"


class ScriptedSource:
    """A `file` source node that yields what `make(context)` yields and cannot seek: tests
    put it in `datago.sources.SOURCES` to script a source, or to resume by replay."""

    source_type = "file"
    seeks = False

    def __init__(self, make: Callable[[SourceContext], AsyncIterator[RawSample]]) -> None:
        self.make = make
        self.config_type = FileSourceConfig

    def resume_refusal(self, config: object) -> str | None:
        return None

    def fingerprint(self, config: object, split: Split) -> dict[str, Any]:
        return {}

    async def open(
        self, config: object, split: Split, context: SourceContext, state: object
    ) -> AsyncIterator[tuple[RawSample, None]]:
        assert state is None  # the engine replays a source that cannot seek
        async for raw in self.make(context):
            yield raw, None
