"""Aspect-ratio buckets, built and chosen exactly as upstream's `image_processing.rs`."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

Bucket = tuple[int, int]
"""A target (width, height)."""
MAX_CANDIDATES = 1 << 16
"""Most candidate sizes a table is built from (1024/32/0.5/2.0 has 46)."""


@dataclass(frozen=True, slots=True)
class BucketTable:
    """Bucket sizes keyed by their 3-decimal aspect-ratio string, e.g. "1.000" -> (1024, 1024)."""

    sizes: dict[str, Bucket]
    keys: list[str] = field(init=False)
    _ratios: list[float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        keys = sorted(self.sizes, key=float)
        object.__setattr__(self, "keys", keys)
        object.__setattr__(self, "_ratios", [float(key) for key in keys])

    @classmethod
    def build(
        cls, image_size: int, downsampling_ratio: int, min_ratio: float, max_ratio: float
    ) -> BucketTable:
        """Upstream's `build_image_size_list`: integer division, later inserts win a key.

        Raises ValueError when no bucket fits, or when the ratios are so extreme that the
        table would be unbounded (upstream overflows or loops for ever).
        """
        patches = image_size // downsampling_ratio
        area = float(patches * patches)
        try:
            wide = range(math.ceil(math.sqrt(area * min_ratio)), _floor_sqrt(area * max_ratio) + 1)
            tall = range(math.ceil(math.sqrt(area / max_ratio)), _floor_sqrt(area / min_ratio) + 1)
        except (OverflowError, ValueError, ZeroDivisionError):  # inf, nan, 0 or < 0
            raise ValueError(
                f"aspect ratios [{min_ratio}, {max_ratio}] must be finite and > 0"
            ) from None
        if _length(wide) + _length(tall) > MAX_CANDIDATES:
            raise ValueError(
                f"aspect ratios [{min_ratio}, {max_ratio}] give over {MAX_CANDIDATES} bucket "
                f"sizes for image size {image_size} and downsampling ratio {downsampling_ratio}"
            )
        sizes = [(pw * downsampling_ratio, _div(area, pw) * downsampling_ratio) for pw in wide]
        sizes += [(_div(area, ph) * downsampling_ratio, ph * downsampling_ratio) for ph in tall]
        sizes = [(w, h) for w, h in sizes if w > 0 and h > 0]  # upstream panics on these
        if not sizes:
            raise ValueError(
                f"no aspect-ratio bucket for image size {image_size}, downsampling ratio "
                f"{downsampling_ratio} and ratios [{min_ratio}, {max_ratio}]"
            )
        return cls({f"{w / h:.3f}": (w, h) for w, h in sizes})

    def key_for(self, width: int, height: int) -> str:
        """The nearest key to width/height: clamped at the ends, ties go to the larger ratio."""
        ratio = width / height
        index = bisect.bisect_left(self._ratios, ratio)
        if index == len(self._ratios):
            return self.keys[-1]
        if index == 0 or self._ratios[index] == ratio:
            return self.keys[index]
        left, right = self._ratios[index - 1], self._ratios[index]
        return self.keys[index - 1] if ratio - left < right - ratio else self.keys[index]

    def choose(self, width: int, height: int) -> Bucket:
        """The bucket an image of this size goes to."""
        return self.sizes[self.key_for(width, height)]


def _length(candidates: range) -> int:
    """len() of a range that may be too long for len()."""
    return max(candidates.stop - candidates.start, 0)


def _floor_sqrt(value: float) -> int:
    return math.floor(math.sqrt(value))


def _div(area: float, patches: int) -> int:
    """floor(area / patches); 0 patches (an empty table) gives 0."""
    return math.floor(area / patches) if patches else 0
