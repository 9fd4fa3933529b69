"""Pure image functions: decode, aspect-ratio buckets, crop/resize, colour conversion, encode.

A leaf: nothing here imports the rest of datago (samples, config, stats); callers pass what
it needs and wrap what it returns.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

PixelArray = NDArray[np.uint8] | NDArray[np.uint16]
"""Decoded pixels, always (height, width, channels); uint16 for 16-bit images."""
