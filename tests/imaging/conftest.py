"""Both resampling backends, so every resize test runs on each one that is installed."""

from __future__ import annotations

import pytest

from datago.imaging.resample import FastResampler, PillowResampler, Resampler


@pytest.fixture(params=["pillow", "fast_image_resize"])
def resampler(request: pytest.FixtureRequest) -> Resampler:
    if request.param == "pillow":
        return PillowResampler()
    try:
        return FastResampler()
    except ImportError:
        pytest.skip("cykooz-resizer is not installed")
