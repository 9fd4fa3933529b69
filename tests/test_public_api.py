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
    ("spec", "level"),
    [
        ("trace", logging.DEBUG),
        ("WARN", logging.WARNING),
        ("warning", logging.WARNING),
        ("off", logging.CRITICAL + 1),
        (None, logging.ERROR),  # the wheel's default
        ("info,reqwest=warn", logging.INFO),  # reqwest: no such logger here
        ("datago=debug", logging.DEBUG),
        ("datago=debug,error", logging.DEBUG),
        ("nonsense", logging.CRITICAL + 1),  # a target, as env_logger reads it: datago off
    ],
)
def test_initialize_logging_reads_env_logger_filters(
    fresh_logging: logging.Logger, spec: str | None, level: int
) -> None:
    assert datago.initialize_logging(spec) is True
    assert fresh_logging.level == level and len(fresh_logging.handlers) == 1


def test_initialize_logging_per_target_levels_and_message_regex(
    fresh_logging: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    assert datago.initialize_logging("warn,datago::client=debug/gave up") is True
    assert fresh_logging.level == logging.WARNING
    assert logging.getLogger("datago.client").level == logging.DEBUG
    logging.getLogger("datago.client").debug("pass gave up: %s", "x")
    logging.getLogger("datago.client").debug("pass went on")
    logging.getLogger("datago.sources").info("not shown: below warn")
    logged = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 2)[2] for line in logged] == ["DEBUG datago.client: pass gave up: x"]


def test_rust_log_wins_over_the_argument(
    fresh_logging: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUST_LOG", "info")
    assert datago.initialize_logging("error") is True
    assert fresh_logging.level == logging.INFO


def test_a_bad_directive_is_ignored_and_named(
    fresh_logging: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATAGO_LOG", "info,datago=loud")
    assert datago.initialize_logging() is True
    assert fresh_logging.level == logging.INFO
    assert "ignored 'datago=loud' in the log filter 'info,datago=loud'" in capsys.readouterr().err
