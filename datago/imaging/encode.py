"""Pre-encoding of delivered pixels into PNG or JPEG bytes (`pre_encode_images`)."""

from __future__ import annotations

import io

from PIL import Image

from datago.imaging.transform import drop_alpha_for_jpeg
from datago.sample import ImagePayload, PixelArray

_PNG_FAST = 1  # upstream: png CompressionType::Fast


def encode_payload(
    pixels: PixelArray,
    original_size: tuple[int, int],
    image_format: str,
    jpeg_quality: int,
) -> ImagePayload:
    """Encode as `image_format` ("png" or "jpeg") into an upstream-shaped encoded payload.

    PNG keeps every mode (L, LA, RGB, RGBA, 16-bit L). JPEG cannot hold alpha or 16 bits, where
    upstream drops the sample: we convert instead (RGBA composited over grey 128, LA -> L,
    16 bits -> 8), so `bit_depth` is then 8.
    """
    if image_format == "jpeg":
        pixels = drop_alpha_for_jpeg(pixels)
    height, width, channels = pixels.shape
    image = Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels)
    buffer = io.BytesIO()
    if image_format == "jpeg":
        image.save(buffer, "JPEG", quality=jpeg_quality)
    else:
        image.save(buffer, "PNG", compress_level=_PNG_FAST)
    bit_depth = 16 if pixels.dtype.itemsize == 2 else 8
    return ImagePayload(
        data=buffer.getvalue(),
        width=width,
        height=height,
        original_width=original_size[0],
        original_height=original_size[1],
        channels=-1,
        bit_depth=bit_depth,
        is_encoded=True,
    )
