"""Sizes from headers alone: they match the decoder's arrays, or bound them from above."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from datago.config import ImageConfig
from datago.image_processor import ImageProcessor
from datago.imaging.decode import decode_image
from datago.imaging.header import jpeg_scaled_size, pixel_format
from datago.stats import StageTimes
from tests.helpers import encode, photo_like, png_bytes

RGB = photo_like(96, 64)


def cases() -> dict[str, bytes]:
    grey = RGB[:, :, :1]
    return {
        "jpeg rgb": encode(RGB, quality=90),
        "jpeg grey": encode(grey, quality=90),
        "png rgb": png_bytes(RGB),
        "png rgba": png_bytes(np.concatenate([RGB, grey], axis=2)),
        "png grey": png_bytes(grey),
        "png grey trns": png_bytes(grey, trns=b"\x00\x80"),
        "png rgb trns": png_bytes(RGB, trns=b"\x00\x10\x00\x20\x00\x30"),
        "png 16-bit rgb": png_bytes(RGB.astype(np.uint16) * 257),
        "png palette": _palette_png(),
        "webp": encode(RGB, "WEBP", quality=80),
        "gif": encode(RGB, "GIF"),
        "bmp": encode(RGB, "BMP"),
    }


def _palette_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(RGB).quantize(16).save(buffer, "PNG")
    return buffer.getvalue()


EXACT = {"jpeg rgb", "jpeg grey", "png rgb", "png rgba", "png grey", "png grey trns"}
EXACT |= {"png rgb trns", "png 16-bit rgb", "bmp"}


@pytest.mark.parametrize("name", sorted(cases()))
def test_header_size_is_the_decoded_size_or_more(name: str) -> None:
    data = cases()[name]
    header = pixel_format(data)
    assert header is not None
    width, height, pixel_bytes = header
    pixels, original = decode_image(data)
    assert (width, height) == original == (96, 64)
    if name in EXACT:
        assert width * height * pixel_bytes == pixels.nbytes
    else:  # palette, GIF and WebP: counted as RGBA, the most they decode to
        assert width * height * pixel_bytes >= pixels.nbytes


def test_unreadable_header_gives_none() -> None:
    assert pixel_format(b"not an image at all") is None
    assert pixel_format(b"\xff\xd8\xff\xe0 garbage") is None


@pytest.mark.parametrize("min_size", [(0, 0), (40, 30), (13, 9), (96, 64)])
def test_jpeg_scaled_size_is_the_reduced_decode(min_size: tuple[int, int]) -> None:
    data = encode(RGB, quality=90)
    pixels, _ = decode_image(data, min_size=min_size if min_size != (0, 0) else None)
    assert jpeg_scaled_size(data, min_size) == (pixels.shape[1], pixels.shape[0])
    assert jpeg_scaled_size(png_bytes(RGB), min_size) is None


@pytest.mark.parametrize(
    "config",
    [
        ImageConfig(),
        ImageConfig(image_to_rgb8=True),
        ImageConfig(
            crop_and_resize=True,
            default_image_size=64,
            downsampling_ratio=16,
            min_aspect_ratio=0.5,
            max_aspect_ratio=2.0,
        ),
        ImageConfig(
            crop_and_resize=True,
            default_image_size=256,
            downsampling_ratio=16,
            min_aspect_ratio=0.5,
            max_aspect_ratio=2.0,
            image_to_rgb8=True,
        ),
    ],
)
@pytest.mark.parametrize("name", sorted(cases()))
def test_footprint_bounds_what_processing_delivers(config: ImageConfig, name: str) -> None:
    data = cases()[name]
    processor = ImageProcessor(config)
    footprint, bucket = processor.footprint(data)
    payload, used = processor.process(data, StageTimes())
    assert bucket == used
    assert isinstance(payload.data, np.ndarray)
    assert footprint >= len(data) + payload.data.nbytes


def test_footprint_of_a_decompression_bomb_is_its_encoded_size() -> None:
    data = encode(RGB, quality=90)
    processor = ImageProcessor(ImageConfig(max_image_pixels=96 * 64 - 1))
    assert processor.footprint(data) == (len(data), None)
    assert ImageProcessor(ImageConfig()).footprint(data)[0] == len(data) + 96 * 64 * 3
