"""Bytes to pixels: simplejpeg for JPEG, Pillow for everything else; all release the GIL.

8-bit PNGs go through libpng (`imagecodecs.png_decode`, ~1.7x Pillow's speed) when the optional
`imagecodecs` is installed; pyspng is not used because it holds the GIL. Modes follow upstream: GIF and palette images with transparency give RGBA, other palette
images RGB, 16-bit greyscale stays 16-bit.
"""

from __future__ import annotations

import importlib
import io
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image, ImageOps

from datago.sample import PixelArray

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_PNG_8_BIT_TYPES = {0, 2, 4, 6}  # grey, RGB, grey + alpha, RGBA: libpng and Pillow agree
# Pillow modes kept as they are; every other mode is converted to the one given here.
_KEPT_MODES = {"L", "LA", "RGB", "RGBA", "I;16"}
_CONVERTED_MODES = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB"}


class DecodeError(ValueError):
    """The bytes are not an image we can decode."""


def _libpng_decoder() -> Callable[[bytes], Any] | None:
    try:
        decoder: Callable[[bytes], Any] = importlib.import_module("imagecodecs").png_decode
    except ImportError:
        return None
    return decoder


fast_png_decode = _libpng_decoder()
"""libpng through `imagecodecs`, or None when it is not installed."""


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG header, or None when the bytes are not a JPEG."""
    if data[:3] != _JPEG_MAGIC:
        return None
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as exc:
        raise DecodeError(f"corrupt JPEG header: {exc}") from exc
    return width, height


def decode_image(
    data: bytes,
    *,
    min_size: tuple[int, int] | None = None,
    exif_orientation: bool = False,
) -> tuple[PixelArray, tuple[int, int]]:
    """Decode to (H, W, C) pixels and the original (width, height).

    `min_size` (width, height) lets JPEGs decode at the smallest DCT scale that still covers
    it, so the array may be smaller than the original size.
    """
    if data[:3] == _JPEG_MAGIC and not exif_orientation:
        try:
            header = simplejpeg.decode_jpeg_header(data)
        except ValueError as exc:
            raise DecodeError(f"corrupt JPEG header: {exc}") from exc
        height, width, colorspace, _ = header
        if colorspace in ("YCbCr", "RGB", "Gray"):
            _check_pixel_count(width, height)
            return _decode_jpeg(data, colorspace, min_size), (width, height)
    if fast_png_decode is not None and not exif_orientation and _is_plain_8_bit_png(data):
        return _decode_png(data, fast_png_decode)
    return _decode_with_pillow(data, exif_orientation)


def _is_plain_8_bit_png(data: bytes) -> bool:
    return (
        data[:8] == _PNG_MAGIC
        and data[12:16] == b"IHDR"
        and len(data) > 25
        and (data[24] == 8 and data[25] in _PNG_8_BIT_TYPES)
    )


def _decode_png(data: bytes, decoder: Callable[[bytes], Any]) -> tuple[PixelArray, tuple[int, int]]:
    width, height = struct.unpack(">II", data[16:24])
    _check_pixel_count(width, height)
    try:
        pixels: PixelArray = decoder(data)
    except RuntimeError as exc:  # imagecodecs.PngError
        raise DecodeError(f"corrupt PNG: {exc}") from exc
    return (pixels[:, :, None] if pixels.ndim == 2 else pixels), (width, height)


def _decode_jpeg(data: bytes, colorspace: str, min_size: tuple[int, int] | None) -> PixelArray:
    min_w, min_h = min_size or (0, 0)
    try:
        pixels: PixelArray = simplejpeg.decode_jpeg(
            data,
            colorspace="GRAY" if colorspace == "Gray" else "RGB",
            min_width=min_w,
            min_height=min_h,
        )
    except ValueError as exc:
        raise DecodeError(f"corrupt JPEG: {exc}") from exc
    return pixels


def _decode_with_pillow(data: bytes, exif_orientation: bool) -> tuple[PixelArray, tuple[int, int]]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            _check_pixel_count(img.width, img.height)
            img.load()
            image = ImageOps.exif_transpose(img) if exif_orientation else img
            array = _to_array(image.convert("RGBA") if img.format == "GIF" else image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"cannot decode image: {exc}") from exc
    return array, (array.shape[1], array.shape[0])


def _to_array(img: Image.Image) -> PixelArray:
    mode = img.mode
    if mode.startswith("I;16"):
        array = np.asarray(img).astype(np.uint16, copy=False)
    elif mode == "I":
        array = np.clip(np.asarray(img), 0, 65535).astype(np.uint16)
    elif mode in _KEPT_MODES:
        array = np.asarray(img)
    elif mode == "P":
        array = np.asarray(img.convert("RGBA" if "transparency" in img.info else "RGB"))
    else:
        array = np.asarray(img.convert(_CONVERTED_MODES.get(mode, "RGB")))
    return array[:, :, None] if array.ndim == 2 else array


def _check_pixel_count(width: int, height: int) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise DecodeError(
            f"decompression bomb: {width}x{height} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS "
            f"({limit})"
        )
