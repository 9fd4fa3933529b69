"""Shared fixtures only (builders live in `tests.helpers`): an image folder, a thread-leak guard,
fresh datago logging."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import datago._log

pytest.register_assert_rewrite("tests.helpers")

from tests.helpers import datago_threads, write_images  # noqa: E402


@pytest.fixture
def image_dir(tmp_path: Path) -> tuple[Path, list[str]]:
    """24 images in a folder and a subfolder."""
    root = tmp_path / "images"
    paths = write_images(root, 16) + write_images(root / "sub", 8, start=16)
    return root, sorted(paths)


@pytest.fixture
def fresh_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[logging.Logger]:
    """`initialize_logging` not run yet; every datago logger's level restored afterwards."""
    loggers = [logging.getLogger(name) for name in ("datago", "datago.client", "datago.sources")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
    root = logging.getLogger("datago")
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(datago._log, "_handler", None)
    for variable in ("RUST_LOG", "DATAGO_LOG"):
        monkeypatch.delenv(variable, raising=False)
    yield root
    for logger, level in zip(loggers, levels, strict=True):
        # setLevel, not an attribute restored: it clears logging's cache of effective levels,
        # else a later test's caplog misses the warnings this level had hidden.
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Every test must leave no datago thread behind (allowing a second to wind down)."""
    yield
    deadline = time.monotonic() + 1.0
    while datago_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not datago_threads(), f"leaked threads: {datago_threads()}"


@pytest.fixture
def no_aws_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """obstore also reads the process environment: keep a developer's AWS setup out."""
    from tests.helpers.object_stores import AWS_VARIABLES  # imports moto: only where used

    for variable in AWS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
