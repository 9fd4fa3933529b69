"""Decoding: every PNG decoder agrees (tRNS too), 16 bits kept, imperfect JPEGs decode."""

from __future__ import annotations

import importlib
import importlib.util
import io
import logging
import struct

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from datago.imaging import decode
from datago.imaging.codecs import PNG_DECODERS
from datago.imaging.decode import DecodeError, decode_image
from tests.helpers import CLEAN_JPEG, IMPERFECT_JPEGS, encode, photo_like, png_bytes, png_file

RGB = photo_like(48, 32)
PNG_PIXELS = {
    "L": RGB[:, :, :1],
    "LA": np.ascontiguousarray(RGB[:, :, :2]),
    "RGB": RGB,
    "RGBA": np.dstack([RGB, RGB[:, :, 2:]]),
    "I;16": RGB[:, :, :1].astype(np.uint16) * 251,
}


MISSING = {
    "image-rs": "image-rs is not installed (it needs Python >= 3.12)",
    "libpng": "imagecodecs is not installed",
    "libwebp": "imagecodecs is not installed",
}


def only_png_decoder(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Leave `name` the one PNG decoder before Pillow ("pillow": none), or skip if missing."""
    if name != "pillow" and name not in PNG_DECODERS:
        pytest.skip(MISSING[name])
    kept = {key: value for key, value in PNG_DECODERS.items() if key == name}
    monkeypatch.setattr(decode, "PNG_DECODERS", kept)


@pytest.fixture(params=["image-rs", "libpng", "pillow"])
def png_decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    only_png_decoder(request.param, monkeypatch)
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


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "WEBP", "TIFF"])
def test_an_image_over_the_pixel_budget_is_refused(png_decoder: str, image_format: str) -> None:
    data = encode(RGB, image_format)
    height, width = RGB.shape[:2]
    assert decode_image(data, max_pixels=width * height)[1] == (width, height)
    with pytest.raises(DecodeError, match=f"decompression bomb: {width}x{height} pixels"):
        decode_image(data, max_pixels=width * height - 1)


def test_jpeg_min_size_decodes_reduced() -> None:
    pixels, size = decode_image(encode(photo_like(400, 320)), min_size=(190, 150))
    assert size == (400, 320) and pixels.shape == (160, 200, 3)  # 1/2 covers 190x150


def _random_16_bit(channels: int) -> np.ndarray:
    rng = np.random.default_rng(channels)
    pixels = rng.integers(0, 65535, (9, 11, channels), dtype=np.uint16, endpoint=True)
    pixels[0, :5, 0] = [255, 1000, 32767, 32768, 65535]  # datago.md §2.5.3's probe values
    return pixels


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("writer", ["zlib", "imagecodecs"])
@pytest.mark.parametrize("decoder", ["image-rs", "libpng"])
def test_16_bit_pngs_keep_16_bits(
    channels: int, writer: str, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_png_decoder(decoder, monkeypatch)
    if writer == "imagecodecs" and importlib.util.find_spec("imagecodecs") is None:
        pytest.skip(MISSING["libpng"])
    pixels = _random_16_bit(channels)
    if writer == "zlib":
        data = png_bytes(pixels)
    else:
        data = importlib.import_module("imagecodecs").png_encode(
            np.squeeze(pixels, 2) if channels == 1 else pixels
        )
    assert (data[24], data[25]) == (16, {1: 0, 2: 4, 3: 2, 4: 6}[channels])
    out, size, used = decode.decode(data)
    assert used == decoder
    assert size == (11, 9) and out.dtype == np.uint16 and out.shape == (9, 11, channels)
    assert np.array_equal(out, pixels)


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16_bit_colour_with_pillow_keeps_the_high_byte(
    channels: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    only_png_decoder("pillow", monkeypatch)
    decode._warn_16_bit_colour_is_cut.cache_clear()
    pixels = _random_16_bit(channels)
    with caplog.at_level(logging.WARNING, logger="datago"):
        out, _ = decode_image(png_bytes(pixels))
        decode_image(png_bytes(pixels))
    assert out.dtype == np.uint8 and out.shape == (9, 11, channels)  # LA16 stays 2 channels
    assert np.array_equal(out, pixels >> 8)
    assert caplog.text.count("16-bit colour PNGs decode to 8 bits") == 1


GREY = photo_like(12, 8)[:, :, :1]
TRNS_CASES = {  # name: (pixels, tRNS chunk body, key colour)
    "grey 8": (GREY, struct.pack(">H", int(GREY[3, 4, 0])), GREY[3, 4]),
    "RGB 8": (RGB[:8, :12], struct.pack(">3H", *RGB[2, 5]), RGB[2, 5]),
    "grey 16": (GREY.astype(np.uint16) * 251, struct.pack(">H", int(GREY[0, 0, 0]) * 251), None),
}


@pytest.mark.parametrize("case", list(TRNS_CASES))
def test_trns_becomes_alpha_on_both_paths(case: str, png_decoder: str) -> None:
    pixels, trns, key = TRNS_CASES[case]
    key = pixels[0, 0] if key is None else key
    out, _ = decode_image(png_bytes(pixels, trns))
    keyed = (pixels == key).all(axis=2)
    assert 0 < keyed.sum() < keyed.size
    opaque = np.iinfo(pixels.dtype).max
    assert out.dtype == pixels.dtype and out.shape[2] == pixels.shape[2] + 1
    assert np.array_equal(out[:, :, :-1], pixels)
    assert np.array_equal(out[:, :, -1], np.where(keyed, 0, opaque))


def test_trns_of_a_2_bit_grey_png_on_both_paths(png_decoder: str) -> None:
    rows = bytes([0, 0b00011011])  # filter byte, then the 2-bit values 0, 1, 2, 3
    out, _ = decode_image(png_file(4, 1, 2, 0, rows, trns=struct.pack(">H", 2)))
    assert out.tolist() == [[[0, 255], [85, 255], [170, 0], [255, 255]]]


def test_pillow_path_expands_trns_itself() -> None:
    pixels, trns, key = TRNS_CASES["RGB 8"]
    out, _ = decode.decode_with_pillow(png_bytes(pixels, trns))
    assert out.shape[2] == 4 and (out[:, :, 3] == 0).sum() == (pixels == key).all(axis=2).sum()


@pytest.mark.parametrize("case", list(IMPERFECT_JPEGS))
def test_jpegs_simplejpeg_refuses_still_decode(case: str) -> None:
    data = IMPERFECT_JPEGS[case]
    with pytest.raises(ValueError):
        simplejpeg.decode_jpeg(data)
    with Image.open(io.BytesIO(CLEAN_JPEG)) as clean:
        expected = np.asarray(clean)
    pixels, size = decode_image(data)
    assert size == (64, 48)
    assert np.array_equal(pixels, expected)


def test_jpeg_without_end_marker_keeps_the_reduced_decode() -> None:
    pixels, _ = decode_image(IMPERFECT_JPEGS["no end marker"], min_size=(32, 24))
    assert np.array_equal(pixels, decode_image(CLEAN_JPEG, min_size=(32, 24))[0])
    assert pixels.shape == (24, 32, 3)  # simplejpeg with the marker added, not Pillow


@pytest.mark.parametrize("cut", [3, 100, len(CLEAN_JPEG) // 2])
def test_truncated_jpegs_still_raise(cut: int) -> None:
    with pytest.raises(DecodeError):
        decode_image(CLEAN_JPEG[:-cut])
