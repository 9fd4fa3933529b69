"""The public surface: `datago.__all__` is sorted, complete and importable; logging setup."""

from __future__ import annotations

import logging
import types

import pytest

import datago
import datago._log


def test_all_is_sorted_and_names_every_public_name() -> None:
    """As httpx tests its exports: `__all__` is exactly the public names `datago` binds, sorted
    (submodules aside), so a name added or dropped on one side only fails here."""
    public = [
        name
        for name, value in vars(datago).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    ]
    assert len(public) >= 10  # DatagoClient, the config, sample and stats types, the errors...
    assert datago.__all__ == sorted(public)
    exported: dict[str, object] = {}
    exec("from datago import *", exported)
    assert sorted(name for name in exported if name != "__builtins__") == datago.__all__


def test_initialize_logging_returns_false_the_second_time() -> None:
    logger = logging.getLogger("datago")
    handlers, level = list(logger.handlers), logger.level
    try:
        first = datago.initialize_logging("info")
        assert datago.initialize_logging(None) is False
        assert logger.level == logging.INFO or not first
    finally:
        logger.handlers, logger.level = handlers, level


@pytest.mark.parametrize(
    ("name", "level"),
    [("trace", logging.DEBUG), ("WARN", logging.WARNING), ("off", logging.CRITICAL + 1)],
)
def test_initialize_logging_takes_upstream_level_names(
    monkeypatch: pytest.MonkeyPatch, name: str, level: int
) -> None:
    logger = logging.getLogger("datago")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    monkeypatch.setattr(datago._log, "_handler", None)
    assert datago.initialize_logging(name) is True
    assert logger.level == level and len(logger.handlers) == 1


def test_initialize_logging_names_a_bad_level_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(datago._log, "_handler", None)
    monkeypatch.setenv("DATAGO_LOG", "loud")
    with pytest.raises(ValueError, match="unknown log level 'loud'; use one of trace, debug"):
        datago.initialize_logging()
