"""The worker's boot, in phases: import (the preloaded modules, then the predictor's module),
then setup(). A template (a worker started `warm`, runtime/templates.py) stops between the two
and waits for the runner's `setup` message, so an instance that takes it over pays setup() only.

What to preload is what the last setup() of the same version imported from outside its package
(`imported_since`): many models import their libraries inside setup() (the catalog's embeddings
model imports sentence-transformers there), so importing the predictor's module alone would
leave most of a cold boot to be paid again.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from typing import Any, BinaryIO

from . import protocol


def preload(names: list[str]) -> None:
    """Import `names` (top-level modules, never the model's own: `imported_since` leaves them
    out, as their import may depend on what setup() did first); one that fails is left to
    setup() to import, and to report."""
    for name in names:
        if name in sys.modules or not name.isidentifier():
            continue
        try:
            importlib.import_module(name)
        except BaseException:  # noqa: BLE001 - setup() imports it again and reports it
            traceback.print_exc()


def imported_since(before: set[str], package_dir: str) -> list[str]:
    """The top-level modules imported since `before` was taken, except the model's own."""
    names = []
    for name, module in list(sys.modules.items()):
        if "." in name or name in before or name.startswith("_") or module is None:
            continue
        if _inside(module, package_dir) or not _has_file(module):
            continue
        names.append(name)
    return sorted(names)


def snapshot() -> tuple[dict[str, str], list[str]]:
    """The process's variables and import path, to compare with `changes` later."""
    return dict(os.environ), list(sys.path)


def changes(before: tuple[dict[str, str], list[str]]) -> dict[str, str | None]:
    """What changed since `before`: variables set (their value) or removed (None), and the
    import path (as `sys.path`, JSON). A template is used only where its imports made the same
    changes as the cold boot's load and setup() did: a setup() that sets `HF_HOME` and then
    imports transformers must not get a transformers imported before."""
    environ, path = before
    changed: dict[str, str | None] = {
        name: value for name, value in os.environ.items() if environ.get(name) != value
    }
    changed.update((name, None) for name in environ if name not in os.environ)
    if sys.path != path:
        changed["sys.path"] = json.dumps(sys.path)
    return changed


def wait_for_setup(control: BinaryIO) -> bool:
    """A template waits for `setup` (True) or `shutdown`/a closed socket (False)."""
    while True:
        try:
            message = protocol.read_message(control, "the runner")
        except (EOFError, OSError, protocol.ProtocolError):
            return False
        if message["t"] == "setup":
            return True
        if message["t"] == "shutdown":
            return False


def _has_file(module: Any) -> bool:
    return isinstance(getattr(module, "__file__", None), str)


def _inside(module: Any, package_dir: str) -> bool:
    path = getattr(module, "__file__", None)
    if not isinstance(path, str):
        return False
    folder = os.path.join(os.path.realpath(package_dir), "")
    return os.path.realpath(path).startswith(folder)
