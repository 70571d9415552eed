"""Where Modelyard keeps what it builds on this machine: `$MODELYARD_HOME`, by default
`~/.cache/modelyard` (environments, the worker's import path)."""

from __future__ import annotations

import os
from pathlib import Path


def modelyard_home() -> Path:
    home = os.environ.get("MODELYARD_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "modelyard"
