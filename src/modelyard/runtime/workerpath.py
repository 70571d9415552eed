"""A `PYTHONPATH` entry that holds the worker package and nothing else.

The worker runs in the model's own environment, so it must not see Modelyard's site-packages;
a directory with a single link to `modelyard_worker` gives it exactly that package.
"""

from __future__ import annotations

import hashlib
import os
from functools import cache
from pathlib import Path

import modelyard_worker

from .home import modelyard_home


@cache
def worker_pythonpath() -> Path:
    """The directory to put on the worker's `PYTHONPATH` (created on first use)."""
    package = Path(modelyard_worker.__file__).resolve().parent
    digest = hashlib.sha256(str(package).encode()).hexdigest()[:16]
    directory = modelyard_home() / "worker-path" / digest
    link = directory / "modelyard_worker"
    if not link.exists():
        directory.mkdir(parents=True, exist_ok=True)
        temporary = directory / f".link-{os.getpid()}"
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(package, target_is_directory=True)
        os.replace(temporary, link)
    return directory
