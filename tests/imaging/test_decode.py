"""Decoding: libpng (when installed) and Pillow agree on PNGs, bad bytes raise DecodeError."""

from __future__ import annotations

import numpy as np
import pytest

from datago.imaging import decode
from datago.imaging.decode import DecodeError, decode_image
from tests.imaging.images import encode, photo_like

RGB = photo_like(48, 32)
PNG_PIXELS = {
    "L": RGB[:, :, :1],
    "LA": np.ascontiguousarray(RGB[:, :, :2]),
    "RGB": RGB,
    "RGBA": np.dstack([RGB, RGB[:, :, 2:]]),
    "I;16": RGB[:, :, :1].astype(np.uint16) * 251,
}


@pytest.fixture(params=["libpng", "pillow"])
def png_decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "pillow":
        monkeypatch.setattr(decode, "fast_png_decode", None)
    elif decode.fast_png_decode is None:
        pytest.skip("imagecodecs is not installed")
    return str(request.param)


@pytest.mark.parametrize("mode", list(PNG_PIXELS))
def test_png_modes_decode_exactly(mode: str, png_decoder: str) -> None:
    pixels, size = decode_image(encode(PNG_PIXELS[mode], "PNG"))
    assert size == (48, 32)
    assert pixels.dtype == PNG_PIXELS[mode].dtype
    assert np.array_equal(pixels, PNG_PIXELS[mode])


def test_truncated_png_raises(png_decoder: str) -> None:
    data = encode(RGB, "PNG")
    with pytest.raises(DecodeError):
        decode_image(data[: len(data) // 2])


def test_png_decompression_bomb_is_refused(
    png_decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("PIL.Image.MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_image(encode(RGB, "PNG"))


def test_jpeg_min_size_decodes_reduced() -> None:
    pixels, size = decode_image(encode(photo_like(400, 320)), min_size=(190, 150))
    assert size == (400, 320) and pixels.shape == (160, 200, 3)  # 1/2 covers 190x150
