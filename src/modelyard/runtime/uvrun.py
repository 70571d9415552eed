"""Running uv and build commands: :class:`Uv` (where uv is, the environment and index arguments
it gets), :func:`shell_env` (the environment build commands get), and :func:`stream`, which runs
either, passing each output line to the progress callback and the build log and keeping the last
:data:`LOG_TAIL_LINES` for the error message.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from . import pipconfig
from .envspec import Environment, EnvironmentBuildError, Progress

#: Lines of a failing step's output quoted in its :class:`EnvironmentBuildError`.
LOG_TAIL_LINES = 20


class Uv:
    """uv as the builder runs it. The executable (the ``uv`` package's, else the one on ``PATH``)
    and pip's configuration are looked up on first use unless given."""

    def __init__(
        self, uv_bin: str | None = None, pip_settings: pipconfig.PipSettings | None = None
    ) -> None:
        self._bin = uv_bin
        self._pip = pip_settings

    @property
    def bin(self) -> str:
        if self._bin is None:
            try:
                import uv

                self._bin = uv.find_uv_bin()
            except (ImportError, FileNotFoundError):
                found = shutil.which("uv")
                if not found:
                    raise EnvironmentBuildError(
                        "uv is not installed (pip install uv); it builds model environments"
                    )
                self._bin = found
        return self._bin

    @property
    def pip_settings(self) -> pipconfig.PipSettings:
        if self._pip is None:
            self._pip = pipconfig.read_pip_config()
        return self._pip

    def env(self, environment: Mapping[str, str]) -> dict[str, str]:
        """The process environment for uv: ours, plus the model's ``UV_*`` variables and pip's
        settings that uv reads from the environment; never downloading a Python, never targeting
        an activated environment."""
        env = dict(os.environ)
        env.update({k: v for k, v in environment.items() if k.startswith("UV_")})
        env.update(self.pip_settings.uv_env(env))
        env["UV_PYTHON_DOWNLOADS"] = "never"
        env["NO_COLOR"] = "1"
        for name in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONHOME", "UV_SYSTEM_PYTHON", "UV_PYTHON"):
            env.pop(name, None)
        return env

    def index_args(self, torch_pin: str | None, workdir: Path) -> list[str]:
        """Index arguments for ``uv pip install``/``compile``: pip's configuration, the best
        version across all indexes (as pip picks), and the torch constraint (written to
        ``workdir``) if any."""
        args = ["--index-strategy", "unsafe-best-match", *self.pip_settings.uv_args()]
        if torch_pin:
            pin_file = workdir / "torch-constraint.txt"
            pin_file.write_text(torch_pin + "\n", encoding="utf-8")
            args += ["--constraints", str(pin_file)]
        return args


def shell_env(env: Environment, environment: Mapping[str, str]) -> dict[str, str]:
    """The process environment for build commands: ours plus the model's ``environment``, with
    ``env`` activated (its ``bin`` first on ``PATH``) and no other Python setup leaking in."""
    out = dict(os.environ)
    for name in ("PYTHONHOME", "PYTHONPATH", "CONDA_PREFIX", "UV_SYSTEM_PYTHON", "UV_PYTHON"):
        out.pop(name, None)
    out.update(environment)
    out["VIRTUAL_ENV"] = str(env.path)
    out["PATH"] = str(env.bin_dir) + os.pathsep + out.get("PATH", os.defpath)
    return out


def stream(
    args: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    say: Progress,
    log: TextIO,
    shell_display: str | None = None,
) -> tuple[int, list[str]]:
    """Run ``args``, streaming each output line to ``say`` and the log. → (status, tail)."""
    tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
    log.write(f"$ {shell_display or ' '.join(args)}\n")
    log.flush()
    try:
        proc = subprocess.Popen(
            args,
            cwd=str(cwd),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        )
    except OSError as e:
        log.write(f"{e}\n")
        return 127, [str(e)]
    assert proc.stdout is not None
    try:
        for chunk in proc.stdout:
            # progress bars redraw with "\r": each redraw is a line of its own
            for line in chunk.rstrip("\n").split("\r"):
                line = line.rstrip()
                if not line or line.startswith("Activate with: "):  # uv venv's hint, not ours
                    continue
                log.write(line + "\n")
                tail.append(line)
                say(line)
            log.flush()
    except BaseException:  # the build is interrupted: do not leave the child running
        proc.kill()
        proc.wait()
        raise
    status = proc.wait()
    log.write(f"[exit status {status}]\n")
    log.flush()
    return status, list(tail)
