"""The public surface: `datago.__all__` is sorted and everything in it exists."""

from __future__ import annotations

import datago


def test_all_is_sorted_and_importable() -> None:
    assert datago.__all__ == sorted(datago.__all__)
    for name in datago.__all__:
        assert getattr(datago, name) is not None


def test_initialize_logging_returns_false_the_second_time() -> None:
    import logging

    logger = logging.getLogger("datago")
    handlers, level = list(logger.handlers), logger.level
    try:
        first = datago.initialize_logging("info")
        assert datago.initialize_logging(None) is False
        assert logger.level == logging.INFO or not first
    finally:
        logger.handlers, logger.level = handlers, level
