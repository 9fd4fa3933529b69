"""Crop/resize into a bucket and RGB8 conversion, as upstream's `image_to_payload`."""

from __future__ import annotations

import math
from typing import cast

import numpy as np

from datago.imaging import PixelArray
from datago.imaging.buckets import Bucket
from datago.imaging.resample import Box, Resampler

_GREY = np.float32(128.0) / np.float32(255.0)


def cover_size(width: int, height: int, bucket: Bucket) -> tuple[int, int]:
    """The size upstream resizes to before cropping: scale = max(tw/w, th/h), rounded.

    Rounded half away from zero as Rust's `f64::round`, not half to even as Python's `round`.
    """
    target_w, target_h = bucket
    scale = max(target_w / width, target_h / height)
    return max(math.floor(width * scale + 0.5), 1), max(math.floor(height * scale + 0.5), 1)


def crop_box(original: tuple[int, int], bucket: Bucket, *, integer_offsets: bool = False) -> Box:
    """The centred crop of the covering resize, mapped back to original pixel coordinates.

    Upstream crops 8-bit images at fractional offsets ((nw - tw) / 2) and 16-bit ones
    (image's `resize_to_fill`) at integer offsets ((nw - tw) // 2).
    """
    width, height = original
    target_w, target_h = bucket
    cover_w, cover_h = cover_size(width, height, bucket)
    left = (cover_w - target_w) // 2 if integer_offsets else (cover_w - target_w) / 2
    top = (cover_h - target_h) // 2 if integer_offsets else (cover_h - target_h) / 2
    sx, sy = width / cover_w, height / cover_h
    return (left * sx, top * sy, (left + target_w) * sx, (top + target_h) * sy)


def crop_and_resize(
    pixels: PixelArray, original: tuple[int, int], bucket: Bucket, resampler: Resampler
) -> PixelArray:
    """Resize + centre-crop into `bucket` in one resampling pass.

    `pixels` may be a reduced-size (DCT-scaled) decode of an image of `original` size: the crop
    box is scaled to it, so the result is the same crop, resampled from fewer pixels.
    """
    height, width = pixels.shape[:2]
    if (width, height) == bucket and original == bucket:
        return pixels
    box = crop_box(original, bucket, integer_offsets=pixels.dtype == np.uint16)
    fx, fy = _decode_scale(original[0], width), _decode_scale(original[1], height)
    left, top, right, bottom = box
    scaled = (left * fx, top * fy, min(right * fx, width), min(bottom * fy, height))
    return resampler.resample(pixels, bucket, scaled)


def _decode_scale(original: int, decoded: int) -> float:
    """libjpeg's M/8 scale behind a decoded size of ceil(original * M / 8), else the plain ratio."""
    if decoded == original:
        return 1.0
    for eighths in range(1, 8):
        if -(-original * eighths // 8) == decoded:
            return eighths / 8
    return decoded / original


def to_rgb8(pixels: PixelArray) -> PixelArray:
    """Upstream's `convert_to_rgb8`: 16 bits -> (v+128)//257, RGBA8 over grey 128; LA8, LA16
    and RGBA16 just drop their alpha."""
    channels = pixels.shape[2]
    if pixels.dtype == np.uint16:
        pixels = _to_8_bit(pixels)
        if channels == 4:
            return cast(PixelArray, np.ascontiguousarray(pixels[:, :, :3]))
    if channels == 4:
        return composite_over_grey(pixels)
    if channels == 3:
        return pixels
    return cast(PixelArray, np.repeat(pixels[:, :, :1], 3, axis=2))


def composite_over_grey(rgba: PixelArray) -> PixelArray:
    """`image::Rgba::blend` of each pixel over opaque (128, 128, 128) in f32, truncated."""
    colour = rgba[:, :, :3].astype(np.float32) / np.float32(255.0)
    alpha = rgba[:, :, 3:].astype(np.float32) / np.float32(255.0)
    alpha_final = (np.float32(1.0) + alpha) - alpha  # bg_a + fg_a - bg_a * fg_a, with bg_a = 1
    blended = (colour * alpha + _GREY * (np.float32(1.0) - alpha)) / alpha_final
    out = (np.float32(255.0) * blended).astype(np.uint8)  # float -> int truncates, as NumCast
    opacity = rgba[:, :, 3:]
    out = np.where(opacity == 0, np.uint8(128), out)  # blend() returns early on alpha 0 ...
    return np.where(opacity == 255, rgba[:, :, :3], out)  # ... and copies opaque pixels


def drop_alpha_for_jpeg(pixels: PixelArray) -> PixelArray:
    """What JPEG can hold: RGBA composited over grey, LA -> L, 16 bits -> 8 (upstream drops)."""
    if pixels.dtype == np.uint16:
        pixels = _to_8_bit(pixels)
    channels = pixels.shape[2]
    if channels == 4:
        return composite_over_grey(pixels)
    if channels == 2:
        return pixels[:, :, :1]
    return pixels


def _to_8_bit(pixels: PixelArray) -> PixelArray:
    """16-bit samples to 8 as the image crate rounds them: (v + 128) // 257."""
    return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
