"""Shared fixtures only (builders live in `tests.helpers`): an image folder, a thread-leak guard."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.helpers")

from tests.helpers import datago_threads, write_images  # noqa: E402


@pytest.fixture
def image_dir(tmp_path: Path) -> tuple[Path, list[str]]:
    """24 images in a folder and a subfolder."""
    root = tmp_path / "images"
    paths = write_images(root, 16) + write_images(root / "sub", 8, start=16)
    return root, sorted(paths)


@pytest.fixture(autouse=True)
def no_thread_leak() -> Iterator[None]:
    """Every test must leave no datago thread behind (allowing a second to wind down)."""
    yield
    deadline = time.monotonic() + 1.0
    while datago_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not datago_threads(), f"leaked threads: {datago_threads()}"
