"""Every decoder gives the same pixels: image-rs, libpng and Pillow on a corpus of PNG files
(8/16 bits, grey, palette, tRNS, LA, RGBA, interlaced), libwebp and Pillow on WebP; and
`client.stats.decoders` says which one ran."""

from __future__ import annotations

import functools
import importlib
import io
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datago import DatagoClient
from datago.imaging import decode
from datago.imaging.codecs import PNG_DECODERS, WEBP_DECODERS, webp_size
from tests.helpers import encode, file_config, interlaced_png, photo_like, png_bytes, png_file
from tests.imaging.test_decode import MISSING, only_png_decoder

RGB = photo_like(37, 23)  # odd sizes: every Adam7 pass and row filter has partial blocks
GREY = RGB[:, :, :1]
ALPHA = np.linspace(0, 255, RGB.shape[1], dtype=np.uint8)[None, :, None].repeat(23, axis=0)


def _pillow_png(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=6, **params)
    return buffer.getvalue()


def _palette(bits: int, alphas: bytes | None) -> tuple[bytes, np.ndarray]:
    """A palette PNG of `bits` per index written by Pillow, and its pixels by table look-up."""
    image = Image.fromarray(RGB).quantize(2**bits)
    params: dict[str, object] = {"bits": bits}
    if alphas is not None:
        params["transparency"] = alphas
    data = _pillow_png(image, **params)
    indices = np.asarray(image)
    table = np.array(image.getpalette(), np.uint8).reshape(-1, 3)
    pixels = table[indices]
    if alphas is None:
        return data, pixels
    alpha = np.full(len(table), 255, np.uint8)
    alpha[: len(alphas)] = np.frombuffer(alphas, np.uint8)
    return data, np.dstack([pixels, alpha[indices]])


def _keyed(pixels: np.ndarray, key: np.ndarray) -> np.ndarray:
    """`pixels` with the alpha channel a tRNS colour `key` means: 0 where equal, else opaque."""
    alpha = np.where((pixels == key).all(axis=2, keepdims=True), 0, np.iinfo(pixels.dtype).max)
    return np.concatenate([pixels, alpha.astype(pixels.dtype)], axis=2)


def _wide(pixels: np.ndarray) -> np.ndarray:
    return pixels.astype(np.uint16) * 257 + np.arange(pixels.shape[1], dtype=np.uint16)[:, None]


def _written(writer: Callable[[np.ndarray], bytes], pixels: np.ndarray) -> tuple[bytes, np.ndarray]:
    return writer(pixels), pixels


def _corpus() -> dict[str, Callable[[], tuple[bytes, np.ndarray]]]:
    """Case name: a maker of (PNG bytes, the pixels every decoder must give)."""
    key_rgb, key_grey = RGB[4, 7], GREY[4, 7]
    cases: dict[str, Callable[[], tuple[bytes, np.ndarray]]] = {
        "grey 8": lambda: (_pillow_png(Image.fromarray(GREY[:, :, 0])), GREY),
        "LA 8": lambda: (
            _pillow_png(Image.fromarray(np.dstack([GREY, ALPHA]))),
            np.dstack([GREY, ALPHA]),
        ),
        "RGB 8": lambda: (_pillow_png(Image.fromarray(RGB)), RGB),
        "RGBA 8": lambda: (
            _pillow_png(Image.fromarray(np.dstack([RGB, ALPHA]))),
            np.dstack([RGB, ALPHA]),
        ),
        "grey 16": lambda: (_pillow_png(Image.fromarray(_wide(GREY)[:, :, 0])), _wide(GREY)),
        "grey 1": lambda: (
            _pillow_png(Image.fromarray(GREY[:, :, 0] > 128)),
            np.where(GREY > 128, 255, 0).astype(np.uint8),
        ),
        "grey 2 + tRNS": lambda: (
            png_file(4, 1, 2, 0, bytes([0, 0b00011011]), trns=struct.pack(">H", 2)),
            np.array([[[0, 255], [85, 255], [170, 0], [255, 255]]], np.uint8),
        ),
        "grey 8 + tRNS": lambda: (
            png_bytes(GREY, struct.pack(">H", int(key_grey[0]))),
            _keyed(GREY, key_grey),
        ),
        "RGB 8 + tRNS": lambda: (
            png_bytes(RGB, struct.pack(">3H", *key_rgb)),
            _keyed(RGB, key_rgb),
        ),
        "grey 16 + tRNS": lambda: (
            png_bytes(_wide(GREY), struct.pack(">H", int(_wide(GREY)[4, 7, 0]))),
            _keyed(_wide(GREY), _wide(GREY)[4, 7]),
        ),
        "RGB 16 + tRNS": lambda: (
            png_bytes(_wide(RGB), struct.pack(">3H", *_wide(RGB)[4, 7])),
            _keyed(_wide(RGB), _wide(RGB)[4, 7]),
        ),
        "palette 1": lambda: _palette(1, None),
        "palette 2 + tRNS": lambda: _palette(2, bytes([0, 128])),
        "palette 4": lambda: _palette(4, None),
        "palette 8 + tRNS": lambda: _palette(8, bytes(range(0, 256, 8))),
    }
    for channels in (1, 2, 3, 4):
        pixels = np.dstack([RGB, ALPHA])[:, :, [[0], [0, 3], [0, 1, 2], [0, 1, 2, 3]][channels - 1]]
        for name, array in ((f"{channels} ch 8", pixels), (f"{channels} ch 16", _wide(pixels))):
            cases[f"{name} interlaced"] = functools.partial(_written, interlaced_png, array)
            if "16" in name and channels > 1:
                cases[name] = functools.partial(_written, png_bytes, array)
    cases["photo with a soft cut-out"] = lambda: (
        _pillow_png(
            Image.fromarray(
                np.dstack([photo_like(300, 200, 7), ALPHA[:1, :1].repeat(200, 0).repeat(300, 1)])
            )
        ),
        np.dstack([photo_like(300, 200, 7), ALPHA[:1, :1].repeat(200, 0).repeat(300, 1)]),
    )
    return cases


CORPUS = _corpus()


@pytest.mark.parametrize("decoder", ["image-rs", "libpng", "pillow"])
@pytest.mark.parametrize("case", list(CORPUS))
def test_every_png_decoder_gives_the_same_pixels(
    case: str, decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, expected = CORPUS[case]()
    if decoder == "pillow" and expected.dtype == np.uint16 and expected.shape[2] > 1:
        pytest.skip("Pillow cuts 16-bit colour to 8 bits (test_decode checks how)")
    only_png_decoder(decoder, monkeypatch)
    pixels, size, used = decode.decode(data)
    libpng_takes_it = (data[24], data[25]) in {
        (8, 0),
        (8, 2),
        (8, 4),
        (8, 6),
        (16, 0),
        (16, 2),
        (16, 4),
        (16, 6),
    }
    assert used == ("pillow" if decoder == "libpng" and not libpng_takes_it else decoder)
    assert size == (expected.shape[1], expected.shape[0])
    assert pixels.dtype == expected.dtype and pixels.shape == expected.shape
    assert np.array_equal(pixels, expected)


def test_decoders_are_tried_fastest_first() -> None:
    order = [name for name in ("image-rs", "libpng") if name in PNG_DECODERS]
    assert list(PNG_DECODERS) == order
    _, _, used = decode.decode(png_bytes(RGB))
    assert used == (order[0] if order else "pillow")


def test_a_png_image_rs_refuses_goes_to_the_next_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    if "image-rs" not in PNG_DECODERS:
        pytest.skip(MISSING["image-rs"])
    data = png_bytes(RGB)
    no_end = data[: data.rindex(b"IEND") - 4]  # every pixel there, but no IEND chunk
    with pytest.raises(ValueError, match="unexpected end of file"):
        decode.decode_with("image-rs", no_end)
    pixels, _, used = decode.decode(no_end)
    assert used in ("libpng", "pillow") and np.array_equal(pixels, RGB)
    only_png_decoder("image-rs", monkeypatch)
    pixels, _, used = decode.decode(no_end)
    assert used == "pillow" and np.array_equal(pixels, RGB)


def test_truncated_png_is_refused_by_every_decoder() -> None:
    data = png_bytes(RGB)
    for name in [*PNG_DECODERS, "pillow"]:
        with pytest.raises((RuntimeError, ValueError)):
            decode.decode_with(name, data[: len(data) // 2])
    with pytest.raises(decode.DecodeError):
        decode.decode(data[: len(data) // 2])


WEBP_CASES: dict[
    str, tuple[np.ndarray, dict[str, Any], bytes]
] = {  # name: (pixels, Pillow save options, the chunk it writes)
    "lossy": (RGB, {"quality": 90}, b"VP8 "),
    "lossy + alpha": (np.dstack([RGB, ALPHA]), {"quality": 90}, b"VP8X"),
    "lossless": (RGB, {"lossless": True}, b"VP8L"),
    "lossless + alpha": (np.dstack([RGB, ALPHA]), {"lossless": True, "exact": True}, b"VP8L"),
}


@pytest.mark.parametrize("case", list(WEBP_CASES))
def test_libwebp_and_pillow_give_the_same_webp_pixels(case: str) -> None:
    pixels, params, chunk = WEBP_CASES[case]
    data = encode(pixels, "WEBP", **params)
    assert data[12:16] == chunk
    assert webp_size(data) == (37, 23)
    with Image.open(io.BytesIO(data)) as image:
        expected = np.asarray(image)
    out, size, used = decode.decode(data)
    assert used == ("libwebp" if WEBP_DECODERS else "pillow")
    assert size == (37, 23) and out.shape == expected.shape and np.array_equal(out, expected)
    if params.get("lossless"):
        assert np.array_equal(out, pixels)


def test_animated_webp_goes_to_pillow() -> None:
    frames = [Image.fromarray(RGB), Image.fromarray(RGB[::-1].copy())]
    buffer = io.BytesIO()
    frames[0].save(buffer, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    data = buffer.getvalue()
    assert webp_size(data) is None
    out, size, used = decode.decode(data)
    assert used == "pillow" and size == (37, 23) and out.shape[:2] == (23, 37)


def test_webp_size_rejects_other_bytes() -> None:
    assert webp_size(png_bytes(RGB)) is None
    assert webp_size(b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(20)) is None  # no start code


def test_image_rs_keeps_16_bits_for_every_channel_count() -> None:
    if "image-rs" not in PNG_DECODERS:
        pytest.skip(MISSING["image-rs"])
    image_rs = importlib.import_module("image_rs")
    for channels in (1, 2, 3, 4):
        pixels = _wide(np.dstack([RGB, ALPHA])[:, :, :channels])
        data = image_rs.encode_uint16_image(
            pixels,
            image_rs.EncodingOptions.Png(
                image_rs.PngCompression.DEFAULT, image_rs.PngFilter.ADAPTIVE
            ),
        )
        for name in PNG_DECODERS:
            assert np.array_equal(decode.decode_with(name, data), pixels)


def test_client_stats_count_images_by_decoder(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(encode(RGB))
    (tmp_path / "b.jpg").write_bytes(encode(RGB[::-1].copy()))
    (tmp_path / "c.png").write_bytes(png_bytes(RGB))
    (tmp_path / "d.webp").write_bytes(encode(RGB, "WEBP", lossless=True))
    (tmp_path / "e.gif").write_bytes(encode(RGB, "GIF"))
    with DatagoClient(file_config(tmp_path)) as client:
        assert len(list(client)) == 5
        decoders = client.stats.decoders
    png = next(iter(PNG_DECODERS), "pillow")
    webp = next(iter(WEBP_DECODERS), "pillow")
    expected: dict[str, int] = {"simplejpeg": 2, "pillow": 1}
    for name in (png, webp):
        expected[name] = expected.get(name, 0) + 1
    assert decoders == expected
