"""The bucket table and the nearest-bucket choice, pinned to upstream's published values."""

from __future__ import annotations

import math

import pytest

from datago.imaging.buckets import BucketTable

TABLE_1024_32 = {
    "0.489": (704, 1440), "0.523": (736, 1408), "0.535": (736, 1376), "0.571": (768, 1344),
    "0.585": (768, 1312), "0.625": (800, 1280), "0.667": (832, 1248), "0.684": (832, 1216),
    "0.730": (864, 1184), "0.778": (896, 1152), "0.829": (928, 1120), "0.882": (960, 1088),
    "0.939": (992, 1056), "1.000": (1024, 1024), "1.065": (1056, 992), "1.133": (1088, 960),
    "1.207": (1120, 928), "1.286": (1152, 896), "1.370": (1184, 864), "1.462": (1216, 832),
    "1.500": (1248, 832), "1.600": (1280, 800), "1.708": (1312, 768), "1.750": (1344, 768),
    "1.870": (1376, 736), "1.913": (1408, 736), "2.045": (1440, 704),
}  # fmt: skip
TABLE_224_16 = {
    "0.526": (160, 304), "0.556": (160, 288), "0.647": (176, 272), "0.750": (192, 256),
    "0.867": (208, 240), "1.000": (224, 224), "1.154": (240, 208), "1.333": (256, 192),
    "1.545": (272, 176), "1.800": (288, 160), "1.900": (304, 160),
}  # fmt: skip


def test_table_1024_32_is_upstreams() -> None:
    table = BucketTable.build(1024, 32, 0.5, 2.0)
    assert table.sizes == TABLE_1024_32
    assert table.keys == sorted(TABLE_1024_32, key=float)


def test_table_224_16_is_upstreams() -> None:
    table = BucketTable.build(224, 16, 0.5, 2.0)
    assert table.sizes == TABLE_224_16
    assert len(table.keys) == 11


def test_512_16_is_the_1024_32_table_at_half_size() -> None:
    table = BucketTable.build(512, 16, 0.5, 2.0)
    assert table.sizes == {k: (w // 2, h // 2) for k, (w, h) in TABLE_1024_32.items()}


def test_integer_division_of_the_patch_count() -> None:
    # 500 // 32 = 15 patches a side, not 15.6: the square bucket is 480x480.
    assert BucketTable.build(500, 32, 1.0, 1.0).sizes == {"1.000": (480, 480)}


@pytest.mark.parametrize(
    ("size", "key", "bucket"),
    [
        ((100, 100), "1.000", (224, 224)),
        ((200, 100), "1.900", (304, 160)),
        ((100, 200), "0.526", (160, 304)),
        ((1000, 10), "1.900", (304, 160)),  # clamped above the last key
        ((10, 1000), "0.526", (160, 304)),  # clamped below the first key
        ((1, 1), "1.000", (224, 224)),
        ((1333, 1000), "1.333", (256, 192)),  # exact hit
    ],
)
def test_upstream_choices(size: tuple[int, int], key: str, bucket: tuple[int, int]) -> None:
    table = BucketTable.build(224, 16, 0.5, 2.0)
    assert table.key_for(*size) == key
    assert table.choose(*size) == bucket


def test_ties_go_to_the_larger_ratio() -> None:
    table = BucketTable({"1.000": (2, 2), "2.000": (4, 2)})
    assert table.key_for(3, 2) == "2.000"  # 1.5 is exactly halfway
    assert table.key_for(299, 200) == "1.000"  # 1.495: nearer the left key
    assert table.key_for(301, 200) == "2.000"


def test_later_insert_wins_a_key() -> None:
    # 12x116 and 12x117 both have the key "0.103"; the later one (from the second loop) stays.
    table = BucketTable.build(38, 1, 0.1, 10.0)
    assert table.sizes["0.103"] == (12, 117)


def test_impossible_table_is_an_error() -> None:
    with pytest.raises(ValueError, match="no aspect-ratio bucket"):
        BucketTable.build(16, 32, 0.5, 2.0)


@pytest.mark.parametrize(
    ("ratios", "message"),
    [
        ((0.3, 0.3), "no aspect-ratio bucket"),  # upstream: every sample panics
        ((0.5, math.inf), "must be finite and > 0"),  # upstream: OverflowError
        ((math.nan, 2.0), "must be finite and > 0"),
        ((0.0, 2.0), "must be finite and > 0"),
        ((0.5, 1e300), "give over 65536 bucket sizes"),  # upstream: a table too big to build
    ],
)
def test_unusable_ratios_are_an_error(ratios: tuple[float, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BucketTable.build(224, 16, *ratios)
