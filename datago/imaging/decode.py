"""Bytes to pixels: simplejpeg for JPEG, libpng or Pillow for PNG, Pillow for the rest.

All of them release the GIL. PNGs of 8 or 16 bits a sample go through libpng
(`imagecodecs.png_decode`, ~1.7x Pillow's speed) when the optional `imagecodecs` is installed;
pyspng is not used because it holds the GIL. Modes follow upstream (the image crate): 16-bit
PNGs stay 16-bit, a tRNS chunk becomes an alpha channel, GIF and palette images with
transparency give RGBA, other palette images RGB. Without imagecodecs, Pillow keeps 16 bits
for grey only: 16-bit colour PNGs come out 8-bit (each sample's high byte), logged once.
JPEGs that simplejpeg refuses are retried with an end marker added when they lack one, then
given to Pillow (which takes stray bytes before a marker, or padding after the data); a
truncated file still fails both.

Decompression bombs: every path reads the image size from the header and refuses an image
over the pixel budget (`max_pixels`, `image_config.max_image_pixels`) before it allocates
anything. The default, `DEFAULT_MAX_IMAGE_PIXELS`, lets through what the Rust wheel decodes
(its image crate refuses to allocate over 512 MiB: 179 MP of RGB). Pillow is opened without
its own guard (`PIL.Image.MAX_IMAGE_PIXELS`, 89.5 MP, which would refuse a 100 MP photo).
"""

from __future__ import annotations

import functools
import importlib
import io
import logging
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import simplejpeg
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageOps

from datago.imaging import PixelArray

logger = logging.getLogger(__name__)

_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"  # EOI marker
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GREY, _RGB, _GREY_ALPHA, _RGBA = 0, 2, 4, 6  # PNG colour types
_LIBPNG_FORMATS = {
    (bits, colour) for bits in (8, 16) for colour in (_GREY, _RGB, _GREY_ALPHA, _RGBA)
}
_PILLOW_8_BIT = {_RGB, _GREY_ALPHA, _RGBA}
"""Colour types whose 16-bit samples Pillow cuts to 8 bits (it has no 16-bit colour modes)."""
# Pillow modes kept as they are; every other mode is converted to the one given here.
_KEPT_MODES = {"L", "LA", "RGB", "RGBA", "I;16"}
_CONVERTED_MODES = {"1": "L", "La": "LA", "PA": "RGBA", "RGBa": "RGBA", "RGBX": "RGB"}
_TRNS_MODES = {"1", "L", "RGB", "I;16"}
"""Modes whose `transparency` is one colour key (tRNS), expanded to an alpha channel."""


DEFAULT_MAX_IMAGE_PIXELS = (512 << 20) // 3
"""178,956,970 pixels: 512 MiB of RGB8, the largest RGB image the Rust wheel decodes (and
twice Pillow's `MAX_IMAGE_PIXELS`, where Pillow itself raises instead of warning)."""


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
    """(width, height) from a JPEG header, or None when simplejpeg cannot read one."""
    if data[:3] != _JPEG_MAGIC:
        return None
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:  # maybe only stray bytes: decode_image lets Pillow decide
        return None
    return width, height


def decode_image(
    data: bytes,
    *,
    min_size: tuple[int, int] | None = None,
    exif_orientation: bool = False,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> tuple[PixelArray, tuple[int, int]]:
    """Decode to (H, W, C) pixels and the original (width, height).

    `min_size` (width, height) lets JPEGs decode at the smallest DCT scale that still covers
    it, so the array may be smaller than the original size. An image of more than
    `max_pixels` pixels (None: no limit) raises `DecodeError` before any pixel is decoded.
    """
    if data[:3] == _JPEG_MAGIC and not exif_orientation:
        decoded = _decode_jpeg(data, min_size, max_pixels)
        if decoded is not None:
            return decoded
    if (
        fast_png_decode is not None
        and not exif_orientation
        and _png_format(data) in _LIBPNG_FORMATS
    ):
        return _decode_png(data, fast_png_decode, max_pixels)
    return decode_with_pillow(data, exif_orientation, max_pixels)


def _png_format(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's header, or None when the bytes are not a PNG."""
    if data[:8] != _PNG_MAGIC or data[12:16] != b"IHDR" or len(data) < 26:
        return None
    return data[24], data[25]


def _decode_png(
    data: bytes, decoder: Callable[[bytes], Any], max_pixels: int | None
) -> tuple[PixelArray, tuple[int, int]]:
    width, height = struct.unpack(">II", data[16:24])
    _check_pixel_count(width, height, max_pixels)
    try:
        pixels: PixelArray = decoder(data)
    except RuntimeError as exc:  # imagecodecs.PngError
        raise DecodeError(f"corrupt PNG: {exc}") from exc
    return (pixels[:, :, None] if pixels.ndim == 2 else pixels), (width, height)


def _decode_jpeg(
    data: bytes, min_size: tuple[int, int] | None, max_pixels: int | None
) -> tuple[PixelArray, tuple[int, int]] | None:
    """simplejpeg's decode, or None for what it cannot (CMYK) or will not (stray bytes) decode."""
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    if colorspace not in ("YCbCr", "RGB", "Gray"):
        return None
    _check_pixel_count(width, height, max_pixels)
    min_w, min_h = min_size or (0, 0)
    grey = colorspace == "Gray"
    try:
        return _simplejpeg(data, grey, min_w, min_h), (width, height)
    except ValueError:  # simplejpeg fails on what libjpeg only warns about
        if data.endswith(_JPEG_END):
            return None
    try:  # complete but for its end marker; a truncated file still fails ("premature end")
        return _simplejpeg(data + _JPEG_END, grey, min_w, min_h), (width, height)
    except ValueError:
        return None


def _simplejpeg(data: bytes, grey: bool, min_width: int, min_height: int) -> PixelArray:
    pixels: PixelArray = simplejpeg.decode_jpeg(
        data, colorspace="GRAY" if grey else "RGB", min_width=min_width, min_height=min_height
    )
    return pixels


def decode_with_pillow(
    data: bytes, exif_orientation: bool = False, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS
) -> tuple[PixelArray, tuple[int, int]]:
    """Decode any format Pillow reads, with the same modes as the libpng path (see above)."""
    try:
        with open_unguarded(data) as img:
            _check_pixel_count(img.width, img.height, max_pixels)
            img.load()
            image = ImageOps.exif_transpose(img) if exif_orientation else img
            if img.format == "GIF":
                image = image.convert("RGBA")
            png = _png_format(data)
            array = _to_array(image) if png is None else _png_to_array(image, *png)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(f"cannot decode image: {exc}") from exc
    return array, (array.shape[1], array.shape[0])


def _png_to_array(img: Image.Image, bits: int, colour_type: int) -> PixelArray:
    """`_to_array` with two Pillow PNG quirks handled: 16-bit colour, raw 2/4-bit tRNS keys."""
    if bits == 16 and colour_type in _PILLOW_8_BIT:
        return _cut_16_bit_colour(img, colour_type)
    return _to_array(img, key_scale=255 // (2**bits - 1) if bits in (2, 4) else 1)


def _to_array(img: Image.Image, key_scale: int = 1) -> PixelArray:
    """Pixels in one of the kept modes, a tRNS colour key (times `key_scale`) made alpha."""
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
    array = array[:, :, None] if array.ndim == 2 else array
    if mode in _TRNS_MODES and "transparency" in img.info:
        return _expand_transparency(array, np.asarray(img.info["transparency"]) * key_scale)
    return array


def _expand_transparency(pixels: PixelArray, key: NDArray[Any]) -> PixelArray:
    """libpng's tRNS expansion: alpha 0 where a pixel equals the key colour, else opaque."""
    keyed = np.all(pixels == key.reshape(-1), axis=2, keepdims=True)
    alpha = np.where(keyed, 0, np.iinfo(pixels.dtype).max).astype(pixels.dtype)
    return np.concatenate([pixels, alpha], axis=2)


def _cut_16_bit_colour(img: Image.Image, colour_type: int) -> PixelArray:
    """What Pillow makes of a 16-bit colour PNG: the high byte of each sample, tRNS lost."""
    _warn_16_bit_colour_is_cut()
    array = np.asarray(img)
    return array[:, :, [0, 3]] if colour_type == _GREY_ALPHA else array  # Pillow gives RGBA


@functools.cache
def _warn_16_bit_colour_is_cut() -> None:
    logger.warning(
        "16-bit colour PNGs decode to 8 bits without imagecodecs; "
        "pip install 'datago-py[fast-png]' to keep 16 bits"
    )


def open_unguarded(data: bytes) -> ImageFile.ImageFile:
    """`PIL.Image.open` without Pillow's size guard: reads the header only, so the caller
    checks the size against its own budget before `load()` allocates the pixels."""
    Image.init()
    prefix = data[:16]
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        try:  # as Image.open: a plugin that fails on the header declines, the next may take it
            accepted = accept is None or accept(prefix)
            if accepted and not isinstance(accepted, str):  # a string: why it declines
                return factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    raise DecodeError("cannot identify the image format")


def _check_pixel_count(width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise DecodeError(
            f"decompression bomb: {width}x{height} pixels exceeds the pixel budget "
            f"({max_pixels}, image_config.max_image_pixels)"
        )
