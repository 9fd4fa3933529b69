"""Crop/resize geometry, pixels against upstream's two-pass Lanczos, and RGB8 conversion."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datago.imaging.resample import Resampler
from datago.imaging.transform import (
    composite_over_grey,
    cover_size,
    crop_and_resize,
    crop_box,
    to_rgb8,
)
from tests.helpers import assert_close, photo_like, reference_bucket_resize
from tests.helpers.reference import MAX_MEAN_ERROR


def test_cover_size_and_fractional_crop() -> None:
    assert cover_size(1280, 960, (576, 448)) == (597, 448)  # round(1280 * 0.4667)
    left, top, right, bottom = crop_box((1280, 960), (576, 448))
    assert top == 0 and bottom == pytest.approx(960)
    assert left == pytest.approx(10.5 * 1280 / 597)  # (597 - 576) / 2 = 10.5, not 10
    assert right - left == pytest.approx(576 * 1280 / 597)


def test_cover_size_rounds_half_away_from_zero() -> None:
    assert cover_size(5, 4, (2, 2)) == (3, 2)  # 2.5 -> 3 as Rust's f64::round (Python: 2)


def test_integer_crop_for_16_bit() -> None:
    left, _, _, _ = crop_box((1280, 960), (576, 448), integer_offsets=True)
    assert left == pytest.approx(10 * 1280 / 597)


@pytest.mark.parametrize(
    ("size", "bucket"),
    [
        ((400, 300), (256, 192)),
        ((300, 400), (192, 256)),
        ((160, 90), (288, 160)),
        ((97, 61), (64, 64)),
    ],
)
def test_pixels_match_upstream_within_tolerance(
    size: tuple[int, int], bucket: tuple[int, int], resampler: Resampler
) -> None:
    pixels = photo_like(*size, seed=sum(size))
    out = crop_and_resize(pixels, size, bucket, resampler)
    assert_close(out, reference_bucket_resize(pixels, bucket))


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_other_channel_counts_keep_their_shape(channels: int, resampler: Resampler) -> None:
    pixels = photo_like(120, 80)
    layers = {1: pixels[:, :, :1], 2: pixels[:, :, :2], 4: np.dstack([pixels, pixels[:, :, :1]])}
    out = crop_and_resize(np.ascontiguousarray(layers[channels]), (120, 80), (64, 48), resampler)
    assert out.shape == (48, 64, channels) and out.dtype == np.uint8
    if channels == 1:
        assert_close(out, reference_bucket_resize(layers[1], (64, 48)))


def test_opaque_alpha_stays_opaque(resampler: Resampler) -> None:
    rgba = np.dstack([photo_like(90, 70), np.full((70, 90), 255, np.uint8)])
    out = crop_and_resize(rgba, (90, 70), (48, 48), resampler)
    assert (out[:, :, 3] == 255).all()
    assert_close(out[:, :, :3], reference_bucket_resize(rgba[:, :, :3].copy(), (48, 48)))


def test_16_bit_is_resized_and_stays_16_bit(resampler: Resampler) -> None:
    ramp = np.tile(np.linspace(0, 65535, 200), (100, 1)).astype(np.uint16)[:, :, None]
    out = crop_and_resize(ramp, (200, 100), (64, 64), resampler)
    assert out.shape == (64, 64, 1) and out.dtype == np.uint16
    # integer centre crop of the 128x64 cover: columns 32..95 of a 0..65535 ramp
    expected = np.linspace(0, 65535, 128)[32:96]
    assert np.abs(out[32, :, 0].astype(float) - expected).max() < 0.01 * 65535


def test_reduced_decode_maps_to_the_same_crop(resampler: Resampler) -> None:
    pixels = photo_like(800, 600)
    half = reference_bucket_resize(pixels, (400, 300))  # stands in for a 1/2 DCT decode
    out = crop_and_resize(half, (800, 600), (256, 160), resampler)
    assert_close(out, reference_bucket_resize(pixels, (256, 160)))


def test_image_already_in_its_bucket_is_unchanged(resampler: Resampler) -> None:
    pixels = photo_like(64, 48)
    assert crop_and_resize(pixels, (64, 48), (64, 48), resampler) is pixels


def test_rgba_over_grey_pins_upstream_values() -> None:
    rgba = np.array([[[200, 100, 50, 128], [10, 20, 30, 1], [100, 200, 250, 254], [9, 9, 9, 0]]])
    out = composite_over_grey(rgba.astype(np.uint8))
    assert out.tolist() == [[[164, 113, 88], [127, 127, 127], [100, 199, 249], [128, 128, 128]]]
    opaque = np.array([[[7, 8, 9, 255]]], np.uint8)
    assert to_rgb8(opaque).tolist() == [[[7, 8, 9]]]


def test_rgb8_drops_la_alpha_and_replicates_grey() -> None:
    la = np.array([[[200, 128], [3, 0]]], np.uint8)
    assert to_rgb8(la).tolist() == [[[200, 200, 200], [3, 3, 3]]]
    grey = np.array([[[17]]], np.uint8)
    assert to_rgb8(grey).tolist() == [[[17, 17, 17]]]
    rgb = photo_like(4, 4)
    assert to_rgb8(rgb) is rgb


def test_rgb8_of_16_bit_pins_upstream_values() -> None:
    grey16 = np.array([[[255], [1000], [32767], [32768], [65535]]], np.uint16)
    out = to_rgb8(grey16)
    assert out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [1, 4, 127, 128, 255]
    assert (out[..., 0] == out[..., 2]).all()


def test_semi_transparent_rgba_is_resampled_premultiplied(resampler: Resampler) -> None:
    rgb = photo_like(120, 90)
    alpha = np.tile(np.linspace(0, 255, 120), (90, 1)).astype(np.uint8)
    rgba = np.dstack([rgb, alpha])
    out = crop_and_resize(rgba, (120, 90), (64, 48), resampler).astype(np.int32)
    ref = reference_bucket_resize(rgba, (64, 48)).astype(np.int32)  # Pillow premultiplies too
    assert np.abs(out[:, :, 3] - ref[:, :, 3]).max() <= 2
    visible = ref[:, :, 3] > 64  # colour of nearly transparent pixels carries little weight
    assert np.abs(out[:, :, :3] - ref[:, :, :3])[visible].mean() <= MAX_MEAN_ERROR


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16_bit_colour_and_alpha_resize_per_channel(channels: int, resampler: Resampler) -> None:
    base = photo_like(150, 100, seed=channels).astype(np.uint16) * 257
    alpha = np.tile(np.linspace(0, 65535, 150), (100, 1)).astype(np.uint16)[:, :, None]
    pixels = np.ascontiguousarray(np.dstack([base, alpha])[:, :, 4 - channels :])
    out = crop_and_resize(pixels, (150, 100), (64, 48), resampler)
    assert out.shape == (48, 64, channels) and out.dtype == np.uint16
    box = crop_box((150, 100), (64, 48), integer_offsets=True)
    for c in range(channels):  # alpha is not premultiplied, as upstream's 16-bit path
        plane = Image.fromarray(pixels[:, :, c].astype(np.float32), "F")
        ref = np.asarray(plane.resize((64, 48), Image.Resampling.LANCZOS, box=box))
        assert np.abs(out[:, :, c] - np.clip(ref, 0, 65535)).max() <= 160  # 0.25 %


def test_rgb8_of_16_bit_colour_rounds_and_drops_alpha() -> None:
    values = np.array([255, 1000, 32767, 32768, 65535], np.uint16)
    rgb16 = np.stack([values, values[::-1], values], axis=1)[None]
    assert to_rgb8(rgb16).tolist() == [
        [[1, 255, 1], [4, 128, 4], [127, 127, 127], [128, 4, 128], [255, 1, 255]]
    ]
    half_alpha = np.full((1, 5, 1), 32768, np.uint16)  # not composited over grey, as RGBA8
    rgba16 = np.concatenate([rgb16, half_alpha], axis=2)
    assert to_rgb8(rgba16).tolist() == to_rgb8(rgb16).tolist()
    la16 = np.concatenate([values[None, :, None], half_alpha], axis=2)
    assert to_rgb8(la16)[0, :, 0].tolist() == [1, 4, 127, 128, 255]
    assert to_rgb8(la16).shape == (1, 5, 3)
