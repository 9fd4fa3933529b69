"""`ImagePayload` as the Rust wheel's: `get_payload()`, calling it, PIL attributes forwarded,
`np.asarray`, `to_pil_image` / `to_numpy_array`, on real files read by the client."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datago import DatagoClient, ImagePayload, Sample
from tests.helpers import path_of

MODES = {"a rgb.png": "RGB", "b grey.png": "L", "d la.png": "LA", "e.jpg": "RGB"}
MODES['c "q" \\\u00e9.png'] = "RGBA"


def read_all(root: Path, **image_config: object) -> dict[str, Sample]:
    config = {"source_type": "file", "source_config": {"root_path": str(root)}, "limit": 10}
    if image_config:
        config["image_config"] = {"crop_and_resize": False, **image_config}
    client = DatagoClient(json.dumps(config))
    samples = {}
    while (sample := client.get_sample()) is not None:
        samples[Path(path_of(sample.id)).name] = sample
    return samples


def test_raw_payloads_behave_as_the_wheels(files: Path) -> None:
    samples = read_all(files)
    for name, mode in MODES.items():
        image = samples[name].image
        with Image.open(files / ("sub/" if name == "d la.png" else "") / name) as reference:
            expected = np.asarray(reference)
        assert image.mode == mode and image().mode == mode  # forwarded, and calling it [wheel]
        assert image.size == reference.size and image.getpixel((0, 0)) == reference.getpixel(
            (0, 0)
        )  # a PIL method, forwarded
        pixels = np.asarray(image)  # grey is (H, W), as PIL gives it [wheel]
        assert pixels.shape == expected.shape and pixels.dtype == np.uint8
        np.testing.assert_array_equal(pixels, expected)
        assert not pixels.flags.writeable  # a read-only view, as the wheel's [wheel]
        assert np.shares_memory(pixels, image.to_numpy_array())  # no copy
        copied = np.array(image)
        assert copied.flags.writeable and not np.shares_memory(copied, pixels)
        as_pil = np.asarray(image.to_pil_image())
        np.testing.assert_array_equal(as_pil.reshape(image.to_numpy_array().shape), image.data)
        payload = image.get_payload()
        channels = len(mode)
        assert (payload.width, payload.height, payload.channels) == (8, 6, channels)
        assert (payload.original_width, payload.original_height) == (8, 6)
        assert (payload.bit_depth, payload.is_encoded) == (8, False)
        assert isinstance(payload.data, bytes) and len(payload.data) == 8 * 6 * channels  # [wheel]
        raw = np.frombuffer(payload.data, np.uint8).reshape(6, 8, channels)
        np.testing.assert_array_equal(raw, image.to_numpy_array())
        np.testing.assert_array_equal(payload.to_numpy_array(), image.to_numpy_array())
        assert payload.to_pil_image().mode == mode


def test_sixteen_bit_grey_is_i16_where_the_wheel_fails(files: Path) -> None:
    image = read_all(files)["f deep.png"].image
    expected = (np.arange(48, dtype=np.uint16).reshape(6, 8) * 1000).astype(np.uint16)
    assert (image.mode, image.get_payload().bit_depth) == ("I;16", 16)
    np.testing.assert_array_equal(np.asarray(image), expected)
    np.testing.assert_array_equal(np.asarray(image, dtype=np.int32), expected)
    assert len(image.get_payload().data) == 6 * 8 * 2


def test_pil_methods_forwarded_save_convert_and_info(files: Path, tmp_path: Path) -> None:
    image = read_all(files)["a rgb.png"].image
    image.save(tmp_path / "out.png")  # a PIL method, as `sample.image.save(...)` upstream
    with Image.open(tmp_path / "out.png") as saved:
        np.testing.assert_array_equal(np.asarray(saved), image.to_numpy_array())
    assert image.convert("L").mode == "L"
    assert isinstance(image.info, dict)
    with pytest.raises(AttributeError):
        _ = image.not_a_pil_attribute


@pytest.mark.parametrize("encode_format", ["png", "jpeg"])
def test_encoded_payloads_open_lazily_and_decode_to_the_same_pixels(
    files: Path, encode_format: str
) -> None:
    samples = read_all(files, pre_encode_images=True, encode_format=encode_format)
    raw = read_all(files)
    for name in ("a rgb.png", "b grey.png"):
        image = samples[name].image
        payload = image.get_payload()
        assert (payload.is_encoded, payload.channels) == (True, -1)  # [wheel]
        opened = Image.open(io.BytesIO(payload.data))  # upstream's raw_types.decode_image_payload
        assert opened.format == encode_format.upper() and image.format == opened.format
        assert image.mode == opened.mode == raw[name].image.mode
        pixels = np.asarray(image)
        np.testing.assert_array_equal(pixels, np.asarray(opened))
        assert pixels.shape == np.asarray(raw[name].image).shape
        if encode_format == "png":  # lossless
            np.testing.assert_array_equal(pixels, np.asarray(raw[name].image))


def test_payloads_pickle_and_an_empty_payload_is_false() -> None:
    payload = ImagePayload.from_array(np.arange(24, dtype=np.uint8).reshape(2, 4, 3))
    restored = pickle.loads(pickle.dumps(payload))
    np.testing.assert_array_equal(restored.data, payload.data)
    assert restored.mode == "RGB"
    empty = ImagePayload.empty()
    assert not empty and empty.get_payload().channels == 0
    with pytest.raises(ValueError, match="empty"):
        _ = empty.mode
