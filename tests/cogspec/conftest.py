"""Helpers shared by the cogspec tests."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

COG_YAML = 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'


@pytest.fixture
def write_package(tmp_path: Path) -> Callable[[dict[str, str]], Path]:
    """Write ``{file name: text}`` (text dedented) into a package folder and return the folder."""

    def write(files: dict[str, str]) -> Path:
        package = tmp_path / "pkg"
        package.mkdir(exist_ok=True)
        for name, text in files.items():
            path = package / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip("\n"))
        return package

    return write
