"""Lanczos3 resampling of a source box into a target size, by Pillow or fast_image_resize.

Both backends release the GIL while they work. `cykooz-resizer` (Python bindings of
fast_image_resize, the resizer upstream datago uses) is 1.7-4x faster than Pillow here; it is
used when installed, and Pillow otherwise.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Protocol, cast

import numpy as np
from PIL import Image

from datago.imaging import PixelArray

Box = tuple[float, float, float, float]
"""(left, top, right, bottom) in source pixels; fractional edges are resampled, not rounded."""


class Resampler(Protocol):
    """Resamples `box` of an (H, W, C) array into `size` (width, height) with Lanczos3."""

    name: str

    def resample(self, pixels: PixelArray, size: tuple[int, int], box: Box) -> PixelArray: ...


class PillowResampler:
    """Pillow's Lanczos; 8-bit LA/RGBA are resampled premultiplied, as upstream does.

    Pillow holds 16 bits only as one-channel I;16, so 16-bit images are resampled a channel
    at a time: alpha is not premultiplied, as in upstream's 16-bit path (image's resize).
    """

    name = "pillow"

    def resample(self, pixels: PixelArray, size: tuple[int, int], box: Box) -> PixelArray:
        if pixels.dtype == np.uint16:
            planes = [_resize(pixels[:, :, c], size, box) for c in range(pixels.shape[2])]
            return cast(PixelArray, np.stack(planes, axis=2))
        resized = _resize(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, size, box)
        return resized[:, :, None] if resized.ndim == 2 else resized


def _resize(pixels: PixelArray, size: tuple[int, int], box: Box) -> PixelArray:
    image = Image.fromarray(np.ascontiguousarray(pixels))
    return np.array(image.resize(size, Image.Resampling.LANCZOS, box=box))


class FastResampler:
    """fast_image_resize through `cykooz-resizer` (AVX2/SSE4.1), one resizer per thread.

    8-bit LA/RGBA are resampled premultiplied, 16-bit ones not, as `PillowResampler`.
    """

    name = "fast_image_resize"

    def __init__(self) -> None:
        self._lib: Any = importlib.import_module("cykooz_resizer")
        lib = self._lib
        self._pixel_types = {
            (np.dtype(np.uint8), 1): lib.PixelType.U8,
            (np.dtype(np.uint8), 2): lib.PixelType.U8x2,
            (np.dtype(np.uint8), 3): lib.PixelType.U8x3,
            (np.dtype(np.uint8), 4): lib.PixelType.U8x4,
            (np.dtype(np.uint16), 1): lib.PixelType.U16,
            (np.dtype(np.uint16), 2): lib.PixelType.U16x2,
            (np.dtype(np.uint16), 3): lib.PixelType.U16x3,
            (np.dtype(np.uint16), 4): lib.PixelType.U16x4,
        }
        self._algorithm = lib.ResizeAlg.convolution(lib.FilterType.lanczos3)
        self._local = threading.local()

    def resample(self, pixels: PixelArray, size: tuple[int, int], box: Box) -> PixelArray:
        lib = self._lib
        height, width, channels = pixels.shape
        pixel_type = self._pixel_types[(pixels.dtype, channels)]
        left, top, right, bottom = box
        source = lib.ImageData(width, height, pixel_type, np.ascontiguousarray(pixels).tobytes())
        target = lib.ImageData(size[0], size[1], pixel_type)
        options = lib.ResizeOptions(
            self._algorithm,
            crop_box=lib.CropBox(left, top, right - left, bottom - top),
            # premultiplied as upstream's mul_div_alpha for 8 bits; its 16-bit path is not
            use_alpha=channels in (2, 4) and pixels.dtype == np.uint8,
        )
        self._resizer().resize(source, target, options)
        flat = np.frombuffer(bytearray(target.get_buffer()), dtype=pixels.dtype)
        return cast(PixelArray, flat.reshape(size[1], size[0], channels))

    def _resizer(self) -> Any:
        resizer = getattr(self._local, "resizer", None)
        if resizer is None:  # a resizer must not be shared between threads
            resizer = self._local.resizer = self._lib.Resizer()
        return resizer


def default_resampler() -> Resampler:
    """fast_image_resize when `cykooz-resizer` is installed, else Pillow."""
    try:
        return FastResampler()
    except ImportError:
        return PillowResampler()
