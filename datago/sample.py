"""What the loader hands out: `Sample` and its numpy-backed `ImagePayload`."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from datago.imaging import PixelArray
from datago.imaging.decode import decode_image

_PIL_MODES = {(1, 8), (2, 8), (3, 8), (4, 8), (1, 16)}  # (channels, bit depth) PIL can hold


@dataclass(frozen=True, slots=True)
class ImagePayload:
    """One image: decoded pixels (`data` is an HWC array) or encoded bytes (`is_encoded`).

    `width`/`height` are the delivered size, `original_*` the decoded size before any
    crop/resize. As upstream, `channels` is -1 for encoded payloads and 0 for an empty one.
    """

    data: PixelArray | bytes
    width: int
    height: int
    original_width: int
    original_height: int
    channels: int
    bit_depth: int
    is_encoded: bool = False

    @classmethod
    def from_array(
        cls, pixels: PixelArray, original_size: tuple[int, int] | None = None
    ) -> ImagePayload:
        """Wrap an HWC array; `original_size` is (width, height) before any transform."""
        height, width, channels = pixels.shape
        orig_w, orig_h = original_size or (width, height)
        bit_depth = 16 if pixels.dtype == np.uint16 else 8
        return cls(pixels, width, height, orig_w, orig_h, channels, bit_depth)

    @classmethod
    def empty(cls) -> ImagePayload:
        """The payload of a sample that has no image (upstream: 0x0, 0 channels)."""
        return cls(b"", 0, 0, 0, 0, 0, 8)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL reports it."""
        return (self.width, self.height)

    def __bool__(self) -> bool:
        return self.width > 0 and self.height > 0

    def to_numpy(self) -> PixelArray:
        """Pixels as an (H, W, C) array; encoded payloads are decoded first, by the loader's
        own decoders (so a 16-bit colour PNG stays 16-bit)."""
        if isinstance(self.data, np.ndarray):
            return self.data
        if not self:
            return np.zeros((0, 0, 0), dtype=np.uint8)
        pixels, _ = decode_image(self.data)
        return pixels

    def to_pil(self) -> Image.Image:
        """The image as a PIL image (L, LA, RGB, RGBA or I;16)."""
        if not isinstance(self.data, np.ndarray):
            if not self:
                raise ValueError("this payload is empty: the sample has no image")
            img = Image.open(io.BytesIO(self.data))
            img.load()
            return img
        if (self.channels, self.bit_depth) not in _PIL_MODES:
            raise ValueError(
                f"{self.channels}-channel {self.bit_depth}-bit pixels have no PIL mode; "
                "use to_numpy() or image_config.image_to_rgb8"
            )
        return Image.fromarray(self.data[:, :, 0] if self.channels == 1 else self.data)

    # Upstream's method names, so code written for the Rust client keeps working.
    to_numpy_array = to_numpy
    to_pil_image = to_pil


@dataclass(frozen=True, slots=True)
class Sample:
    """One training sample: its id, its image and everything that came with it."""

    id: str
    source: str
    image: ImagePayload = field(default_factory=ImagePayload.empty)
    attributes: dict[str, Any] = field(default_factory=dict)
    duplicate_state: int = 0
    masks: dict[str, ImagePayload] = field(default_factory=dict)
    additional_images: dict[str, ImagePayload] = field(default_factory=dict)
    latents: dict[str, bytes] = field(default_factory=dict)
    coca_embedding: list[float] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
