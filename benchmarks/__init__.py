"""Benchmarks: each compares datago with its baselines side by side on the same data."""
