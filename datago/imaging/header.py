"""An image's size and bytes per pixel from its header alone, before it is decoded.

JPEG through simplejpeg's header reader (~1 us a 12 MP file), PNG from its IHDR chunk (and a
tRNS chunk, which adds an alpha channel), WebP from its RIFF header, anything else through
Pillow's lazy open (~50 us). The bytes per pixel are those `decode` gives, or an upper bound
where it converts (palette and GIF: RGBA; WebP: RGBA, as alpha may be present).
"""

from __future__ import annotations

import struct

import simplejpeg

from datago.imaging.codecs import png_format, png_size, webp_size
from datago.imaging.decode import DecodeError, open_unguarded

_JPEG_MAGIC = b"\xff\xd8\xff"
_JPEG_BYTES = {"Gray": 1, "YCbCr": 3, "RGB": 3}
"""Bytes per pixel by JPEG colour space; CMYK and YCCK go through Pillow's 4-byte CMYK."""
_PNG_CHANNELS = {0: 1, 2: 3, 3: 4, 4: 2, 6: 4}
"""Channels by PNG colour type (palette: up to RGBA); a tRNS chunk adds one to grey and RGB."""
_PILLOW_BYTES = {"1": 1, "L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 2}
"""Bytes per pixel of the Pillow modes decoded as they are; any other mode counts 4."""


def pixel_format(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, bytes per pixel) of the decoded image, or None when the header is
    unreadable (the decoder then reports why)."""
    if data[:3] == _JPEG_MAGIC:
        try:
            height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
        except ValueError:
            pass
        else:
            return width, height, _JPEG_BYTES.get(colorspace, 4)
    png = png_format(data)
    if png is not None:
        bits, colour_type = png
        channels = _PNG_CHANNELS.get(colour_type, 4)
        if colour_type in (0, 2) and _has_trns(data):
            channels += 1
        return *png_size(data), channels * (2 if bits == 16 else 1)
    webp = webp_size(data)
    if webp is not None:
        return *webp, 4
    try:
        with open_unguarded(data) as image:
            return image.width, image.height, _PILLOW_BYTES.get(image.mode, 4)
    except (OSError, SyntaxError, ValueError, DecodeError):
        return None


def jpeg_scaled_size(data: bytes, min_size: tuple[int, int]) -> tuple[int, int] | None:
    """A JPEG's (width, height) at the smallest DCT scale covering `min_size`, as `decode`
    decodes it; None for other formats."""
    if data[:3] != _JPEG_MAGIC:
        return None
    try:
        height, width, _, _ = simplejpeg.decode_jpeg_header(
            data, min_height=min_size[1], min_width=min_size[0]
        )
    except ValueError:
        return None
    return width, height


def _has_trns(data: bytes) -> bool:
    """Whether a tRNS chunk comes before the image data (where the format puts it)."""
    offset = 8
    while offset + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if kind == b"tRNS":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        offset += 12 + length
    return False
