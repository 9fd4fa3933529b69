"""Oracles for the imaging tests: upstream's bucket resize replicated with Pillow, a tolerance."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# Tolerance against Pillow's replica of upstream (resize, then resample the fractional crop),
# for photo-like images; edge-heavy ones differ more (test_process's line-art test).
MAX_MEAN_ERROR = 1.5
MAX_P999_ERROR = 8
MAX_ERROR = 16


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


def assert_close(out: np.ndarray, ref: np.ndarray) -> None:
    """`out` matches the reference within the tolerance above, same shape and dtype."""
    assert out.shape == ref.shape and out.dtype == ref.dtype
    error = np.abs(out.astype(np.int32) - ref.astype(np.int32))
    assert error.mean() <= MAX_MEAN_ERROR
    assert np.percentile(error, 99.9) <= MAX_P999_ERROR
    assert error.max() <= MAX_ERROR
