"""What the loader hands out: `Sample`, its numpy-backed `ImagePayload` and `LatentPayload`.

Both surfaces read the same objects: the wheel's names and ours (guide, "`Sample`")."""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray
from PIL import Image

from datago.imaging import PixelArray
from datago.imaging.decode import decode_image, open_unguarded

_PIL_MODES = {(1, 8): "L", (2, 8): "LA", (3, 8): "RGB", (4, 8): "RGBA", (1, 16): "I;16"}
"""PIL mode of raw pixels, by (channels, bit depth)."""
_PAYLOAD_FIELDS = frozenset(
    {"data", "width", "height", "original_width", "original_height", "channels", "bit_depth"}
    | {"is_encoded"}
)


@dataclass(frozen=True, slots=True)
class ImagePayload:
    """One image: decoded pixels (`data` is an HWC array) or encoded bytes (`is_encoded`); it
    also behaves as the wheel's payload, a PIL image (guide, "`Sample`")."""

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

    @property
    def mode(self) -> str:
        """The PIL mode (L, LA, RGB, RGBA or I;16), read without decoding."""
        if isinstance(self.data, np.ndarray):
            return _PIL_MODES.get((self.channels, self.bit_depth), "")
        return self._open().mode

    def __bool__(self) -> bool:
        return self.width > 0 and self.height > 0

    def to_numpy(self) -> PixelArray:
        """Pixels as an (H, W, C) array; encoded payloads are decoded first, by the loader's
        own decoders (so a 16-bit colour PNG stays 16-bit)."""
        if isinstance(self.data, np.ndarray):
            return self.data
        if not self:
            return np.zeros((0, 0, 0), dtype=np.uint8)
        pixels, _ = decode_image(self.data, max_pixels=None)  # bytes we encoded ourselves
        return pixels

    def to_pil(self) -> Image.Image:
        """The image as a PIL image (L, LA, RGB, RGBA or I;16); encoded payloads are opened
        lazily, as the wheel does (pixels are decoded on first use)."""
        if not isinstance(self.data, np.ndarray):
            return self._open()
        if (self.channels, self.bit_depth) not in _PIL_MODES:
            raise ValueError(
                f"{self.channels}-channel {self.bit_depth}-bit pixels have no PIL mode; "
                "use to_numpy() or image_config.image_to_rgb8"
            )
        return Image.fromarray(self.data[:, :, 0] if self.channels == 1 else self.data)

    def _open(self) -> Image.Image:
        if not self:
            raise ValueError("this payload is empty: the sample has no image")
        assert isinstance(self.data, bytes)
        return open_unguarded(self.data)

    # -- the Rust wheel's surface ----------------------------------------------------------

    to_numpy_array = to_numpy
    to_pil_image = to_pil

    def get_payload(self) -> PayloadBytes:
        """The wheel's inner payload: the same fields, `data` as bytes."""
        return PayloadBytes(
            self.width,
            self.height,
            self.original_width,
            self.original_height,
            self.channels,
            self.bit_depth,
            self.is_encoded,
            payload=self,
        )

    def __call__(self) -> Image.Image:
        """The PIL image, as calling the wheel's payload gives it."""
        return self.to_pil()

    def __getattr__(self, name: str) -> Any:
        # Only reached for names the payload lacks; never for fields (unpickling reads them
        # before they are set) or private names (numpy probes `__array_interface__`).
        if name.startswith("_") or name in _PAYLOAD_FIELDS:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.to_pil(), name)

    def __array__(self, dtype: DTypeLike | None = None, copy: bool | None = None) -> NDArray[Any]:
        """`np.asarray(payload)`: the pixels PIL would give, (H, W) for one channel. Raw
        pixels come as a read-only view (no copy), unless `copy` or `dtype` asks for one."""
        pixels: NDArray[Any] = self.to_numpy()
        fresh = not isinstance(self.data, np.ndarray)
        if pixels.ndim == 3 and pixels.shape[2] == 1:
            pixels = pixels[:, :, 0]
        if dtype is not None and np.dtype(dtype) != pixels.dtype:
            if copy is False:
                raise ValueError(f"{pixels.dtype} pixels cannot become {dtype} without a copy")
            pixels, fresh = pixels.astype(dtype), True
        if copy and not fresh:
            return pixels.copy()
        if not fresh:
            pixels = pixels.view()
            pixels.flags.writeable = False
        return pixels


@dataclass(frozen=True, slots=True)
class PayloadBytes:
    """What the wheel's `get_payload()` returns: the payload's fields, with `data` as bytes."""

    width: int
    height: int
    original_width: int
    original_height: int
    channels: int
    bit_depth: int
    is_encoded: bool
    payload: ImagePayload = field(repr=False, compare=False)

    @property
    def data(self) -> bytes:
        """Encoded bytes, or the raw pixels' bytes (HWC, row-major; a copy per read, as the
        wheel's)."""
        data = self.payload.data
        return data if isinstance(data, bytes) else data.tobytes()

    def to_pil_image(self) -> Image.Image:
        return self.payload.to_pil()

    def to_numpy_array(self) -> PixelArray:
        return self.payload.to_numpy()


@dataclass(frozen=True, slots=True)
class LatentPayload:
    """A latent file of a db sample, as the wheel's: its bytes and their length."""

    data: bytes

    @property
    def len(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class SampleInfo:
    """What a sample is besides its images, one definition for `Sample` and the sources'
    `RawSample`: its id, where it came from and its metadata."""

    id: str
    source: str
    _: KW_ONLY
    attributes_dict: dict[str, Any] = field(default_factory=dict)
    duplicate_state: int = 0
    coca_embedding: list[float] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)

    @property
    def attributes(self) -> str:
        """The attributes as compact JSON text, as the wheel's `attributes`."""
        return _json_text(self.attributes_dict) if self.attributes_dict else "{}"

    def info(self) -> dict[str, Any]:
        """The `SampleInfo` fields by name: a decoded sample is built from a raw one's."""
        return {name: getattr(self, name) for name in _INFO_FIELDS}


_INFO_FIELDS = tuple(info.name for info in fields(SampleInfo))


@dataclass(frozen=True, slots=True)
class Sample(SampleInfo):
    """One training sample: its id, its image and everything that came with it.

    `attributes` is the JSON text the Rust wheel gives (`'{}'` for files); `attributes_dict`
    is the same, parsed."""

    image: ImagePayload = field(default_factory=ImagePayload.empty)
    masks: dict[str, ImagePayload] = field(default_factory=dict)
    additional_images: dict[str, ImagePayload] = field(default_factory=dict)
    latents: dict[str, LatentPayload] = field(default_factory=dict)


def python_types(sample: Sample) -> dict[str, Any]:
    """The wheel's `get_sample_auto_convert()` dict: PIL images (None for a sample without
    one), attribute values as JSON text, latents as `{"data": bytes, "len": int}`."""
    return {
        "id": sample.id,
        "source": sample.source,
        "duplicate_state": sample.duplicate_state,
        "attributes": {name: _json_text(value) for name, value in sample.attributes_dict.items()},
        "tags": list(sample.tags),
        "coca_embedding": list(sample.coca_embedding),
        "latents": {
            name: {"data": latent.data, "len": latent.len}
            for name, latent in sample.latents.items()
        },
        "image": _pil(sample.image),
        "masks": {name: _pil(payload) for name, payload in sample.masks.items()},
        "additional_images": {
            name: _pil(payload) for name, payload in sample.additional_images.items()
        },
    }


def _json_text(value: Any) -> str:
    """Compact JSON, non-ASCII kept, as serde_json writes it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _pil(payload: ImagePayload) -> Image.Image | None:
    return payload.to_pil() if payload else None
