"""Bytes to pixels, each format by its fastest installed decoder (docs/performance.md).

Which decoder runs, the modes they give and the decompression-bomb guard are in the guide's
`image_config` section; `decode` says which decoder made the pixels."""

from __future__ import annotations

import functools
import io
import logging
import struct
from typing import Any, NamedTuple

import numpy as np
import simplejpeg
from numpy.typing import NDArray
from PIL import Image, ImageFile, ImageOps

from datago.imaging import PixelArray
from datago.imaging.codecs import (
    PNG_DECODERS,
    WEBP_DECODERS,
    Decoder,
    png_format,
    png_size,
    webp_size,
)

logger = logging.getLogger(__name__)

_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_END = b"\xff\xd9"  # EOI marker
_RGB, _GREY_ALPHA, _RGBA = 2, 4, 6  # PNG colour types
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


class Decoded(NamedTuple):
    """Decoded pixels, the original (width, height) and the name of the decoder that ran."""

    pixels: PixelArray
    size: tuple[int, int]
    decoder: str


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
    """Decode to (H, W, C) pixels and the original (width, height); see `decode`."""
    pixels, size, _ = decode(
        data, min_size=min_size, exif_orientation=exif_orientation, max_pixels=max_pixels
    )
    return pixels, size


def decode(
    data: bytes,
    *,
    min_size: tuple[int, int] | None = None,
    exif_orientation: bool = False,
    max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
) -> Decoded:
    """Decode to (H, W, C) pixels, the original (width, height) and the decoder's name.

    `min_size` (width, height) lets JPEGs decode at the smallest DCT scale that still covers
    it, so the array may be smaller than the original size. An image of more than
    `max_pixels` pixels (None: no limit) raises `DecodeError` before any pixel is decoded.
    """
    decoded = None if exif_orientation else _decode_fast(data, min_size, max_pixels)
    if decoded is None:
        return Decoded(*decode_with_pillow(data, exif_orientation, max_pixels), "pillow")
    return decoded


def _decode_fast(
    data: bytes, min_size: tuple[int, int] | None, max_pixels: int | None
) -> Decoded | None:
    """JPEG, PNG or still WebP by their own decoders, or None: Pillow's turn."""
    if data[:3] == _JPEG_MAGIC:
        jpeg = _decode_jpeg(data, min_size, max_pixels)
        return None if jpeg is None else Decoded(*jpeg, "simplejpeg")
    size = png_size(data) if png_format(data) is not None else webp_size(data)
    if size is None:
        return None
    _check_pixel_count(*size, max_pixels)
    decoders = PNG_DECODERS if data[:4] != b"RIFF" else WEBP_DECODERS
    for name, decoder in decoders.items():
        try:
            pixels = decoder(data)
        except (RuntimeError, ValueError):  # corrupt, or beyond the image crate's memory limit
            continue
        if pixels.shape[:2] == (size[1], size[0]):
            return Decoded(pixels, size, name)
    return None


def decode_with(name: str, data: bytes) -> PixelArray:
    """Decode with one named decoder: one of `PNG_DECODERS` or `WEBP_DECODERS`, or "pillow"."""
    if name == "pillow":
        return decode_with_pillow(data)[0]
    decoder: Decoder = {**PNG_DECODERS, **WEBP_DECODERS}[name]
    return decoder(data)


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
    """Decode any format Pillow reads, with the same modes as the other paths (see above)."""
    try:
        with open_unguarded(data) as img:
            _check_pixel_count(img.width, img.height, max_pixels)
            img.load()
            image = ImageOps.exif_transpose(img) if exif_orientation else img
            if img.format == "GIF":
                image = image.convert("RGBA")
            png = png_format(data)
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
        "16-bit colour PNGs decode to 8 bits with Pillow; "
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
