"""Throwaway virtual environments for `bench/peers.py`'s competitors (BentoML, Ray Serve).

Each peer is installed into a virtual environment of its own under `$MODELYARD_HOME/bench-envs`
(default `~/.cache/modelyard/bench-envs`), outside the repository, so that none of its packages
reaches Modelyard's own environment (Ray Serve pins a different FastAPI and Starlette than ours,
BentoML brings its own web stack). An environment is made once with `uv` when it is on PATH
(much faster), else with `python -m venv` and pip, and reused while its marker file names the
same requirements; delete the folder (or pass `--rebuild-envs`) to start again.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from modelyard.runtime.home import modelyard_home

#: The pinned peers: the versions of the issue's table (issue 16).
REQUIREMENTS = {
    "bentoml": ["bentoml==1.4.40"],
    "rayserve": ["ray[serve]==2.60.0"],
}
MARKER = ".modelyard-bench-ready"
INSTALL_TIMEOUT = 1200  # seconds: a cold pip install of Ray Serve on a slow link


def envs_root() -> Path:
    """Where the peers' environments live: `$MODELYARD_HOME/bench-envs`."""
    return modelyard_home() / "bench-envs"


def ensure_env(
    name: str,
    root: Path | None = None,
    *,
    rebuild: bool = False,
    say: Callable[[str], None] = print,
) -> Path:
    """The Python interpreter of peer `name`'s environment, made first if missing or stale."""
    requirements = REQUIREMENTS[name]
    folder = (root or envs_root()) / name
    python = folder / "bin" / "python"
    marker = folder / MARKER
    wanted = "\n".join(requirements) + "\n"
    if not rebuild and marker.exists() and marker.read_text() == wanted and python.exists():
        return python
    say(f"installing {' '.join(requirements)} into {folder} (once) ...")
    # A half-made environment (an install cut short) is not trusted: start from nothing.
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    uv = shutil.which("uv")
    if uv:
        _run([uv, "venv", "--quiet", "--python", sys.executable, str(folder)])
        _run([uv, "pip", "install", "--quiet", "--python", str(python), *requirements])
    else:
        _run([sys.executable, "-m", "venv", str(folder)])
        _run([str(python), "-m", "pip", "install", "--quiet", *requirements])
    marker.write_text(wanted)  # last: its presence means the install finished
    return python


def _run(command: list[str]) -> None:
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-20:])
        raise RuntimeError(f"{' '.join(command)} failed:\n{tail}")
