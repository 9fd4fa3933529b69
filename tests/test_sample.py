"""ImagePayload conversions to numpy and PIL, raw and encoded."""

from __future__ import annotations

import numpy as np
import pytest

from datago import ImagePayload
from tests.helpers import encode, photo


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (2, "LA"), (3, "RGB"), (4, "RGBA")])
def test_raw_payload_to_pil_and_numpy(channels: int, mode: str) -> None:
    pixels = np.arange(5 * 7 * channels, dtype=np.uint8).reshape(5, 7, channels)
    payload = ImagePayload.from_array(pixels, original_size=(70, 50))
    assert (payload.width, payload.height, payload.channels) == (7, 5, channels)
    assert (payload.original_width, payload.original_height, payload.bit_depth) == (70, 50, 8)
    image = payload.to_pil()
    assert image.mode == mode and image.size == payload.size == (7, 5)
    np.testing.assert_array_equal(np.asarray(image).reshape(5, 7, channels), pixels)
    assert payload.to_numpy() is pixels
    assert payload.to_numpy_array() is pixels


def test_sixteen_bit_grey() -> None:
    pixels = np.array([[[0], [1000]], [[32768], [65535]]], dtype=np.uint16)
    payload = ImagePayload.from_array(pixels)
    assert payload.bit_depth == 16
    image = payload.to_pil()
    assert image.mode == "I;16"
    assert image.getpixel((1, 1)) == 65535


def test_sixteen_bit_rgb_has_no_pil_mode() -> None:
    payload = ImagePayload.from_array(np.zeros((2, 2, 3), dtype=np.uint16))
    with pytest.raises(ValueError, match="image_to_rgb8"):
        payload.to_pil()


def test_encoded_payload_decodes_on_demand() -> None:
    image = photo(12, 8).convert("RGB")
    data = encode(image, "PNG")
    payload = ImagePayload(data, 12, 8, 24, 16, channels=-1, bit_depth=8, is_encoded=True)
    np.testing.assert_array_equal(payload.to_numpy(), np.asarray(image))
    assert payload.to_pil().size == (12, 8)


def test_empty_payload() -> None:
    payload = ImagePayload.empty()
    assert not payload
    assert payload.to_numpy().shape == (0, 0, 0)
    with pytest.raises(ValueError, match="no image"):
        payload.to_pil()
