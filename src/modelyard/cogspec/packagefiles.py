"""The files a package names, read as someone else's input: inside the package, and bounded.

``cog.yaml`` names files (``predict: predict.py:Predictor``, ``python_requirements``, a weights
source); a pushed package is written by anyone with an account, so each name is resolved against
the package's folder, symlinks included, and one that leads outside is refused the same way
whether or not something exists there (the answer must not tell an attacker which files the
server has). Reads are bounded so that a gigabyte "requirements.txt" is an error, not a gigabyte
held in memory.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CogSpecError

MAX_TEXT_BYTES = 4 * 1024 * 1024  # a predictor's source or a requirements file


def inside(package_dir: Path, name: str) -> Path | None:
    """``package_dir/name`` (as written, for messages) when it stays inside the package once
    symlinks and ``..`` are resolved; None otherwise (an absolute path, ``../x``, a symlink out),
    without looking at anything outside the package."""
    if not name or "\0" in name or os.path.isabs(name):
        return None
    root = Path(package_dir).resolve()
    try:
        # Non-strict: a missing file resolves as far as it exists, and the caller then says
        # "not found" about a name inside the package, never about one outside it.
        resolved = (root / name).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return None
    return Path(package_dir) / name if resolved.is_relative_to(root) else None


def read_text(path: Path, display: str, limit: int = MAX_TEXT_BYTES) -> str:
    """The UTF-8 text of a package file of at most ``limit`` bytes; a CogSpecError otherwise."""
    try:
        with open(path, "rb") as stream:
            data = stream.read(limit + 1)
    except FileNotFoundError:
        raise CogSpecError("file not found", display) from None
    except OSError as exc:
        raise CogSpecError(f"cannot read file: {exc.strerror or exc}", display) from None
    if len(data) > limit:
        raise CogSpecError(f"the file is larger than {limit // 1024} KiB", display)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CogSpecError(f"cannot read file: not UTF-8 ({exc.reason})", display) from None
