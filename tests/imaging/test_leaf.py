"""`datago.imaging` is a leaf: its modules import nothing of datago outside it."""

from __future__ import annotations

import ast
from pathlib import Path

import datago.imaging


def test_imaging_imports_nothing_of_datago_but_itself() -> None:
    folder = Path(datago.imaging.__file__).parent
    outside = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            outside += [
                f"{path.name}: {name}"
                for name in names
                if name.split(".")[0] == "datago" and not name.startswith("datago.imaging")
            ]
    assert len(list(folder.glob("*.py"))) >= 6
    assert outside == []
