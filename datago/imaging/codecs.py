"""The optional fast decoders for PNG and WebP, and the header readers they need.

Each format's decoders are listed fastest first, as measured in docs/performance.md: PNG by
the Rust `image` crate (`image-rs`, Python >= 3.12), then libpng (`imagecodecs`); WebP by
libwebp (`imagecodecs`). Pillow, always installed, comes after them in `decode`. All of them
release the GIL. A decoder raises ValueError or RuntimeError for bytes it will not decode.
"""

from __future__ import annotations

import importlib
import struct
from collections.abc import Callable
from types import ModuleType

import numpy as np

from datago.imaging import PixelArray

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_GREY, _RGB, _GREY_ALPHA, _RGBA = 0, 2, 4, 6  # PNG colour types
_LIBPNG_FORMATS = {
    (bits, colour) for bits in (8, 16) for colour in (_GREY, _RGB, _GREY_ALPHA, _RGBA)
}
"""(bit depth, colour type) that libpng's path decodes; palette and 1-4 bits go on."""
_VP8_START = b"\x9d\x01\x2a"
_VP8L_SIGNATURE = 0x2F
_VP8X_ANIMATION = 0x02

Decoder = Callable[[bytes], PixelArray]


def _optional(module: str) -> ModuleType | None:
    try:
        return importlib.import_module(module)
    except ImportError:
        return None


_image_rs = _optional("image_rs")
_imagecodecs = _optional("imagecodecs")


def png_format(data: bytes) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's header, or None when the bytes are not a PNG."""
    if data[:8] != _PNG_MAGIC or data[12:16] != b"IHDR" or len(data) < 26:
        return None
    return data[24], data[25]


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header of bytes that `png_format` accepted."""
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def webp_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a still WebP from its header, or None (not WebP, or animated)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    kind = data[12:16]
    if kind == b"VP8 " and data[23:26] == _VP8_START:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L" and data[20] == _VP8L_SIGNATURE:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X" and not data[20] & _VP8X_ANIMATION:
        width, height = data[24:27], data[27:30]
        return int.from_bytes(width, "little") + 1, int.from_bytes(height, "little") + 1
    return None


def _png_image_rs(data: bytes) -> PixelArray:
    assert _image_rs is not None
    png = _image_rs.ImageFormat.PNG
    info = _image_rs.read_image_info(data, png)  # ~1 us: the channels after tRNS expansion
    wide = info.dtype == np.uint16
    decoder = _image_rs.decode_uint16_image if wide else _image_rs.decode_uint8_image
    pixels: PixelArray = decoder(data, png, num_channels=info.num_channels)
    return pixels


def _png_libpng(data: bytes) -> PixelArray:
    assert _imagecodecs is not None
    if png_format(data) not in _LIBPNG_FORMATS:
        raise ValueError("palette and 1-4 bit PNGs are not decoded by the libpng path")
    pixels: PixelArray = _imagecodecs.png_decode(data)
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _webp_libwebp(data: bytes) -> PixelArray:
    assert _imagecodecs is not None
    pixels: PixelArray = _imagecodecs.webp_decode(data)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4):
        raise ValueError(f"libwebp gave an array of shape {pixels.shape}")
    return pixels


PNG_DECODERS: dict[str, Decoder] = {
    name: decoder
    for name, decoder, module in (
        ("image-rs", _png_image_rs, _image_rs),
        ("libpng", _png_libpng, _imagecodecs),
    )
    if module is not None
}
"""The installed PNG decoders besides Pillow, fastest first."""

WEBP_DECODERS: dict[str, Decoder] = {} if _imagecodecs is None else {"libwebp": _webp_libwebp}
"""The installed WebP decoders besides Pillow (for still images only)."""
