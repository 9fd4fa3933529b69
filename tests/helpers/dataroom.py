"""Folders that the dataroom folder server (`datago.dataroom_server`) serves as catalogues."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.helpers.images import encode, photo

CATALOGUE_SOURCES = {"alpha": 25, "beta": 20, "gamma": 5}


def write_catalogue(root: Path) -> dict[str, dict[str, Any]]:
    """50 JPEGs in three sources, each with a JSON sidecar; returns id -> its sidecar data."""
    expected: dict[str, dict[str, Any]] = {}
    number = 0
    for source, count in CATALOGUE_SOURCES.items():
        (root / source).mkdir(parents=True)
        for _ in range(count):
            name = f"img_{number:03d}"
            width, height = 32 + 8 * (number % 5), 24 + 8 * (number % 4)
            (root / source / f"{name}.jpg").write_bytes(encode(photo(width, height, number)))
            meta: dict[str, Any] = {"score": number / 50, "tags": ["odd" if number % 2 else "even"]}
            if number % 7 == 0:
                meta["duplicate_state"] = 2
            (root / source / f"{name}.json").write_text(json.dumps(meta))
            expected[f"{source}/{name}.jpg"] = {**meta, "width": width, "height": height}
            number += 1
    return expected


def write_catalogue_with_latents(root: Path, count: int = 150) -> dict[str, dict[str, Any]]:
    """`count` small JPEG/PNG images in two sources; every third one has a mask and a latent."""
    expected: dict[str, dict[str, Any]] = {}
    for number in range(count):
        source = "alpha" if number % 2 else "beta"
        folder = root / source
        folder.mkdir(parents=True, exist_ok=True)
        width, height = 16 + 4 * (number % 5), 12 + 4 * (number % 3)
        ext = "png" if number % 4 == 1 else "jpg"
        name = f"img_{number:03d}"
        image = photo(width, height, number)
        (folder / f"{name}.{ext}").write_bytes(encode(image, "PNG" if ext == "png" else "JPEG"))
        meta: dict[str, Any] = {"width": width, "height": height}
        if number % 3 == 0:
            mask = image.convert("L").point(lambda v: 255 if v > 128 else 0)
            (folder / f"{name}.mask.png").write_bytes(encode(mask, "PNG"))
            latent = io.BytesIO()
            np.save(latent, np.full((2, 3), number, dtype=np.float16))
            (folder / f"{name}.latent_vae.npy").write_bytes(latent.getvalue())
            meta["latent"] = latent.getvalue()
        expected[f"{source}/{name}.{ext}"] = meta
    return expected
