"""Benchmarks: each compares datago with its baselines side by side on the same data."""

BUCKETS = {
    "crop_and_resize": True,
    "default_image_size": 512,
    "downsampling_ratio": 32,
    "min_aspect_ratio": 0.5,
    "max_aspect_ratio": 2.0,
}
"""bench.md's resize workload: 512 px aspect-ratio buckets (13 of them, 352x704 to 704x352)."""
