"""Pre-encoding: PNG round trips losslessly in every mode, JPEG converts what it cannot hold."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from datago.config import ImageConfig
from datago.image_processor import ImageProcessor
from datago.imaging.decode import decode_image
from datago.imaging.encode import encode_image
from datago.stats import StageTimes
from tests.helpers import encode, photo_like

RGB = photo_like(40, 30)
MODES = {
    "L": RGB[:, :, :1],
    "LA": np.ascontiguousarray(RGB[:, :, :2]),
    "RGB": RGB,
    "RGBA": np.dstack([RGB, RGB[:, :, :1]]),
    "I;16": (RGB[:, :, :1].astype(np.uint16) * 257),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_png_round_trip_is_lossless(mode: str) -> None:
    pixels = MODES[mode]
    data, bit_depth = encode_image(pixels, "png", 92)
    assert bit_depth == (16 if mode == "I;16" else 8)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.mode == mode
    assert np.array_equal(decode_image(data)[0], pixels)


SMOOTH = np.dstack([*np.meshgrid(np.arange(64) * 3, np.arange(48) * 4), np.full((48, 64), 99)])


@pytest.mark.parametrize(("channels", "jpeg_mode"), [(1, "L"), (3, "RGB"), (2, "L")])
def test_jpeg_round_trip_is_close(channels: int, jpeg_mode: str) -> None:
    pixels = np.ascontiguousarray(SMOOTH[:, :, :channels].astype(np.uint8))
    data, _ = encode_image(pixels, "jpeg", 95)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "JPEG" and image.mode == jpeg_mode
    expected = pixels[:, :, : 1 if jpeg_mode == "L" else 3].astype(int)
    assert np.abs(decode_image(data)[0].astype(int) - expected).mean() < 1.5


def test_jpeg_of_rgba_is_composited_over_grey() -> None:
    transparent = np.zeros((16, 16, 4), np.uint8)
    data, bit_depth = encode_image(transparent, "jpeg", 95)
    assert bit_depth == 8
    assert np.abs(decode_image(data)[0].astype(int) - 128).max() <= 1


def test_jpeg_of_16_bit_is_8_bit() -> None:
    data, bit_depth = encode_image(np.full((8, 8, 1), 32768, np.uint16), "jpeg", 95)
    assert bit_depth == 8
    assert np.abs(decode_image(data)[0].astype(int) - 128).max() <= 1


def test_processor_pre_encodes_the_bucket() -> None:
    config = ImageConfig(
        crop_and_resize=True,
        default_image_size=224,
        downsampling_ratio=16,
        min_aspect_ratio=0.5,
        max_aspect_ratio=2.0,
        pre_encode_images=True,
        encode_format="jpeg",
        jpeg_quality=90,
    )
    payload, bucket = ImageProcessor(config).process(encode(photo_like(400, 300)), StageTimes())
    assert payload.is_encoded and payload.size == bucket == (256, 192)
    assert (payload.channels, payload.bit_depth) == (-1, 8)
    assert (payload.original_width, payload.original_height) == (400, 300)
    assert payload.to_pil().size == (256, 192)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16_bit_colour_png_round_trip_keeps_16_bits(channels: int) -> None:
    codecs = pytest.importorskip("imagecodecs")
    rgba = np.dstack([RGB, RGB[:, :, :1]]).astype(np.uint16) * 257 + 3  # low bytes are not 0
    pixels = np.ascontiguousarray(rgba[:, :, 4 - channels :])
    data, bit_depth = encode_image(pixels, "png", 92)
    assert bit_depth == 16
    assert (data[24], data[25]) == (16, {2: 4, 3: 2, 4: 6}[channels])
    assert np.array_equal(codecs.png_decode(data), pixels)
    assert np.array_equal(decode_image(data)[0], pixels)  # 16 bits, not Pillow's 8
