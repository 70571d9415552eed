"""A catalog model's recorded default example: `example/input.json` next to its input files, and
`example/output.json` written by `modelyard record-example` from a real run.

Both live in the package's `example/` folder (left out of the package by its `.dockerignore`).
File inputs are named by file name in `input.json` (which inputs are files comes from the
schema); file outputs are `{"$file": name}` in `output.json`, so a text output is never mistaken
for a file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXAMPLE_DIR = "example"
INPUT_FILE = "input.json"
OUTPUT_FILE = "output.json"
FILE_MARK = "$file"
COVER_NAMES = ("cover.png", "cover.jpg", "cover.jpeg", "cover.webp")


class ExampleError(ValueError):
    """The example folder is incomplete or refers to a file that is not there."""


@dataclass(frozen=True)
class RecordedExample:
    """What a real run of the example input gave; files are `Path`s (text is never a `Path`)."""

    input: dict[str, Any]
    output: Any
    logs: str
    predict_time: float | None


def example_dir(package: Path) -> Path:
    return package / EXAMPLE_DIR


def cover_path(package: Path) -> Path | None:
    """The package's cover image, if it has one."""
    return next((package / n for n in COVER_NAMES if (package / n).is_file()), None)


def read_input(package: Path, file_fields: dict[str, bool]) -> dict[str, Any] | None:
    """`example/input.json` with file names made absolute; None when there is no example."""
    path = example_dir(package) / INPUT_FILE
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExampleError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ExampleError(f"{path}: must be a JSON object of inputs")
    folder = example_dir(package)
    for name, is_list in file_fields.items():
        if name in value:
            names = value[name] if is_list else [value[name]]
            paths = [str(_existing(folder, n, path)) for n in names]
            value[name] = paths if is_list else paths[0]
    return value


def read_recorded(package: Path, file_fields: dict[str, bool]) -> RecordedExample | None:
    """The recorded example, or None when the package has none (or it was never recorded)."""
    inputs = read_input(package, file_fields)
    path = example_dir(package) / OUTPUT_FILE
    if inputs is None or not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ExampleError(f"{path}: not JSON ({exc})") from exc
    folder = example_dir(package)
    output = map_files(document.get("output"), lambda name: _existing(folder, name, path))
    for name, is_list in file_fields.items():
        if name in inputs:
            inputs[name] = [Path(p) for p in inputs[name]] if is_list else Path(inputs[name])
    return RecordedExample(
        input=inputs,
        output=output,
        logs=str(document.get("logs") or ""),
        predict_time=document.get("predict_time"),
    )


def write_recorded(package: Path, output: Any, logs: str, predict_time: float | None) -> Path:
    """Write `output.json`; `output` must already name its files `{"$file": name}`."""
    path = example_dir(package) / OUTPUT_FILE
    document = {"output": output, "logs": logs, "predict_time": predict_time}
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path


def map_files(value: Any, convert: Callable[[str], Any]) -> Any:
    """`value` with every `{"$file": name}` replaced by `convert(name)`."""
    if isinstance(value, dict):
        if set(value) == {FILE_MARK}:
            return convert(value[FILE_MARK])
        return {k: map_files(v, convert) for k, v in value.items()}
    if isinstance(value, list):
        return [map_files(v, convert) for v in value]
    return value


def _existing(folder: Path, name: object, document: Path) -> Path:
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ExampleError(f"{document}: {name!r} is not a file name in {folder}")
    path = folder / name
    if not path.is_file():
        raise ExampleError(f"{document}: {name!r} is missing from {folder}")
    return path
