"""The Pillow bucket fit that the torch and webdataset baselines use (Pillow and numpy only, so
the peer venv can import it)."""

from __future__ import annotations

from PIL import Image


def fit_bucket(image: Image.Image, bucket: tuple[int, int]) -> Image.Image:
    """Cover the bucket and crop its centre, in one Lanczos pass (fractional box)."""
    width, height = image.size
    scale = max(bucket[0] / width, bucket[1] / height)
    crop_w, crop_h = bucket[0] / scale, bucket[1] / scale
    left, top = max((width - crop_w) / 2, 0.0), max((height - crop_h) / 2, 0.0)
    box = (left, top, min(left + crop_w, width), min(top + crop_h, height))
    return image.resize(bucket, Image.Resampling.LANCZOS, box=box)
