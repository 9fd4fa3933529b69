"""Pre-encoding of delivered pixels into PNG or JPEG bytes (`pre_encode_images`)."""

from __future__ import annotations

import importlib
import io

from PIL import Image

from datago.imaging import PixelArray
from datago.imaging.transform import drop_alpha_for_jpeg

_PNG_FAST = 1  # upstream: png CompressionType::Fast


def encode_image(pixels: PixelArray, image_format: str, jpeg_quality: int) -> tuple[bytes, int]:
    """Encode as `image_format` ("png" or "jpeg"); returns the bytes and their bit depth.

    PNG keeps every mode, 8 or 16 bits (16-bit colour, which only imagecodecs decodes, is
    written by it too). JPEG cannot hold alpha or 16 bits, where upstream drops the sample:
    we convert instead (RGBA composited over grey 128, LA -> L, 16 bits -> 8), so the bit
    depth is then 8.
    """
    if image_format == "jpeg":
        pixels = drop_alpha_for_jpeg(pixels)
    channels = pixels.shape[2]
    bit_depth = 16 if pixels.dtype.itemsize == 2 else 8
    if bit_depth == 16 and channels > 1:  # Pillow has no 16-bit colour modes
        data = _png_16_bit_colour(pixels)
    else:
        image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
        buffer = io.BytesIO()
        if image_format == "jpeg":
            image.save(buffer, "JPEG", quality=jpeg_quality)
        else:
            image.save(buffer, "PNG", compress_level=_PNG_FAST)
        data = buffer.getvalue()
    return data, bit_depth


def _png_16_bit_colour(pixels: PixelArray) -> bytes:
    codecs = importlib.import_module("imagecodecs")
    data: bytes = codecs.png_encode(pixels, level=_PNG_FAST)
    return data
