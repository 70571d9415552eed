"""Writing a prediction's output files next to the user, named as Cog's CLI names them."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelyard.runtime.events import OutputFile


def save_file(file: OutputFile, directory: Path, stem: str) -> Path:
    """Copy a model's output file to `directory/<stem><ext>` and return where it went."""
    suffix = "".join(file.path.suffixes[-1:])
    target = directory / f"{stem}{suffix}"
    shutil.copyfile(file.path, target)
    return target


def save_files(
    value: Any,
    directory: Path,
    stem: str = "output",
    written: list[Path] | None = None,
    render: Callable[[Path], Any] = str,
) -> Any:
    """`value` with every OutputFile replaced by `render(path it was written to)` (the path is
    also appended to `written`).

    One file is `output.<ext>`; the files of a list are `output.<i>.<ext>`; a file inside an object
    is `output.<key>.<ext>`.
    """
    if isinstance(value, OutputFile):
        path = save_file(value, directory, stem)
        if written is not None:
            written.append(path)
        return render(path)
    if isinstance(value, list):
        return [
            save_files(v, directory, f"{stem}.{i}", written, render) for i, v in enumerate(value)
        ]
    if isinstance(value, dict):
        return {
            k: save_files(v, directory, f"{stem}.{k}", written, render) for k, v in value.items()
        }
    return value


def has_files(value: Any) -> bool:
    if isinstance(value, OutputFile):
        return True
    if isinstance(value, list):
        return any(has_files(v) for v in value)
    if isinstance(value, dict):
        return any(has_files(v) for v in value.values())
    return False
