"""The steps of one environment build, and the marker that tells a complete environment.

:class:`Build` runs, in place, in Cog's Dockerfile order: system packages (checked with dpkg,
installed with apt-get when root), ``uv venv``, ``pip`` when there are shell commands (they often
call it), ``pre_install``, the requirements, the Cog SDK, ``build.run``. Every step's output goes to
the progress callback and the build log; a failing step raises :class:`EnvironmentBuildError` with
its output's tail. The caller (:class:`.environment.EnvironmentBuilder`) holds the lock, removes
a failed build and then calls :func:`write_marker`: an environment without the marker is half-built.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TextIO

from . import pipconfig, sandbox, sysdeps, torchpin, uvrun
from .envplan import BUILD_FORMAT, Plan
from .envspec import Environment, EnvironmentBuildError, Progress
from .home import modelyard_home
from .reqlines import install_lines

MARKER = Path(".modelyard") / "environment.json"


def is_complete(env: Environment) -> bool:
    """``env`` was fully built (its marker, written last, exists) and has its interpreter."""
    return (env.path / MARKER).is_file() and env.python.exists()


class Build:
    """One build of ``env`` from ``plan`` (see the module docstring); :meth:`run` runs it."""

    def __init__(
        self,
        plan: Plan,
        env: Environment,
        package_dir: Path,
        uv: uvrun.Uv,
        cwd: Path,
        say: Progress,
        log: TextIO,
        log_path: Path,
    ) -> None:
        self.plan = plan
        self.spec = plan.spec
        self.env = env
        self.package_dir = package_dir
        self.uv = uv
        self.cwd = cwd  # where uv venv runs (the cache dir)
        self.say = say
        self.log = log
        self.log_path = log_path
        #: Where the build's own files go (requirements, constraint, marker).
        self.meta = env.path / MARKER.parent
        #: The torch constraint in force; dropped when the requirements conflict with it.
        self.torch_pin = plan.torch_pin
        self.uv_env: dict[str, str] = {}

    def run(self) -> None:
        spec, say = self.spec, self.say

        # 1. system packages
        if spec.system_packages:
            self._system_packages()

        # 2. the virtualenv
        say(f"Creating environment (Python {self.plan.python.version})")
        self.uv_env = self.uv.env(spec.environment)
        status, tail = self._stream(
            [
                self.uv.bin,
                "venv",
                str(self.env.path),
                "--python",
                str(self.plan.python.path),
                "--no-progress",
                "--color",
                "never",
            ],
            cwd=self.cwd,
            env=self.uv_env,
        )
        if status != 0 or not self.env.python.exists():
            raise self._fail(
                f"Could not create the environment with Python {self.plan.python.version} "
                f"(uv venv exited with status {status})",
                tail,
            )
        self.meta.mkdir(parents=True, exist_ok=True)
        if self.torch_pin and torchpin.mentions_torch(spec.requirements):
            say(f"Using the local CPU build of torch ({self.torch_pin}) for any torch requirement")
        if self.plan.torch_warning:
            say(self.plan.torch_warning)

        shell_env = uvrun.shell_env(self.env, spec.environment)
        if spec.run_commands or spec.pre_install:  # build commands often call pip, as in Cog
            say("Installing pip (for the build commands)")
            self._uv_install(["pip"], "Could not install pip into the environment")

        # 3. pre_install (before the requirements, as in Cog before 0.9)
        for cmd in spec.pre_install:
            self._command(cmd, "pre_install", shell_env)

        # 4. requirements, then the Cog SDK (Cog's order: the SDK wins on conflicts)
        self._requirements()
        say(f"Installing {spec.cog_sdk}")
        self._uv_install([spec.cog_sdk], f"Could not install the Cog SDK ({spec.cog_sdk})")

        # 5. build.run
        for cmd in spec.run_commands:
            self._command(cmd, "build.run", shell_env)

    def _fail(self, message: str, tail: list[str]) -> EnvironmentBuildError:
        self.log.write(f"ERROR: {message}\n")
        return EnvironmentBuildError(message, tail, self.log_path)

    def _stream(
        self,
        args: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        shell_display: str | None = None,
    ) -> tuple[int, list[str]]:
        return uvrun.stream(
            args, cwd=cwd, env=env, say=self.say, log=self.log, shell_display=shell_display
        )

    def _uv_install(self, what: list[str], label: str) -> None:
        args = [
            self.uv.bin,
            "pip",
            "install",
            "--python",
            str(self.env.python),
            "--no-progress",
            "--color",
            "never",
            *self.uv.index_args(self.torch_pin, self.meta),
            *what,
        ]
        status, tail = self._stream(args, cwd=self.meta, env=self.uv_env)
        if status != 0:
            raise self._fail(f"{label} (uv pip install exited with status {status})", tail)

    def _requirements(self) -> None:
        lines = install_lines(self.spec.requirements, self.package_dir, self.spec.cog_sdk, self.say)
        if not lines:
            return
        req_file = self.meta / "requirements.txt"
        req_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
        n = sum(
            1 for line in lines if not line.startswith("-") or line.startswith(("-e", "--editable"))
        )
        self.say(f"Installing {n} requirement{'s' if n != 1 else ''}")
        args = ["-r", str(req_file)]
        try:
            self._uv_install(args, "Could not install the model's requirements")
        except EnvironmentBuildError as e:
            if not self.torch_pin or "torch" not in "\n".join(e.log_tail):
                raise
            self.say(
                f"warning: the requirements conflict with the local CPU build of torch "
                f"({self.torch_pin}); retrying without it (a CUDA build may be downloaded)"
            )
            self.torch_pin = None
            self._uv_install(args, "Could not install the model's requirements")

    def _command(self, cmd: str, kind: str, shell_env: Mapping[str, str]) -> None:
        """A model's own build command, in a sandbox where workers get one (it is the model's
        code as much as `predict` is: it must not see the server's data folder or secrets)."""
        self.say(f"Running {kind}: {cmd}")
        with self._sandboxed(shell_env) as (prefix, env):
            status, tail = self._stream(
                [*prefix, "/bin/sh", "-c", cmd], cwd=self.package_dir, env=env, shell_display=cmd
            )
        if status != 0:
            raise self._fail(f"{kind} command failed (exit status {status}): {cmd}", tail)

    @contextlib.contextmanager
    def _sandboxed(
        self, shell_env: Mapping[str, str]
    ) -> Iterator[tuple[list[str], Mapping[str, str]]]:
        """The bwrap prefix and variables for a build command: none of the server's variables
        but the model's `environment` and the activated environment; or, without a sandbox
        (`--no-sandbox`, no bubblewrap), no prefix and `shell_env`."""
        if not sandbox.wanted() or sandbox.unavailable_reason() is not None:
            yield [], shell_env
            return
        parent = modelyard_home() / "sandboxes"
        parent.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="build-", dir=parent))
        settings = self.uv.pip_settings
        pip_files = [f for f in pipconfig.config_files() if f.is_file()]
        certificate = [Path(settings.cert)] if settings.cert else []
        shown = (*pip_files, *settings.constraints, *certificate)
        shown += tuple(settings.local_find_links_dirs())
        spec = sandbox.SandboxSpec(root, read_only=tuple(shown))
        try:
            spec.prepare()
            env = sandbox.environment(os.environ)
            env.update(self.spec.environment)
            env["VIRTUAL_ENV"] = str(self.env.path)
            env["PATH"] = str(self.env.bin_dir) + os.pathsep + env["PATH"]
            prefix = sandbox.build_command(
                spec,
                python=self.plan.python.path,
                env_dir=self.env.path,
                package_dir=self.package_dir,
                environment=env,
            )
            yield prefix, env
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def _system_packages(self) -> None:
        packages = self.spec.system_packages
        if not sysdeps.dpkg_available():
            raise self._fail(
                "Cannot check system packages ("
                + ", ".join(packages)
                + "): dpkg-query not found; only Debian/Ubuntu hosts are supported",
                [],
            )
        self.say("Checking system packages: " + " ".join(packages))
        missing = sysdeps.missing_packages(packages)
        if not missing:
            return
        cmd = sysdeps.install_command(missing)
        if not sysdeps.is_root():
            raise self._fail(
                "Missing system packages: "
                + ", ".join(missing)
                + ". Install them with: sudo apt-get install -y "
                + " ".join(missing),
                [],
            )
        apt_env = sysdeps.apt_env()
        if sysdeps.apt_lists_stale():
            self.say("Updating apt package lists")
            status, tail = self._stream(["apt-get", "update"], cwd=Path("/"), env=apt_env)
            if status != 0:
                raise self._fail(f"apt-get update failed (exit status {status})", tail)
        self.say("Installing system packages: " + " ".join(missing))
        status, tail = self._stream(cmd, cwd=Path("/"), env=apt_env)
        still = sysdeps.missing_packages(missing) if status == 0 else missing
        if status != 0 or still:
            raise self._fail(
                "Could not install system packages "
                + ", ".join(still or missing)
                + f" ({' '.join(cmd)} exited with status {status})",
                tail,
            )


def write_marker(
    plan: Plan, env: Environment, package_dir: Path, elapsed: float, uv: uvrun.Uv
) -> None:
    """Record how ``env`` was built (with ``uv pip freeze``); written last, atomically."""
    try:
        freeze = subprocess.run(
            [uv.bin, "pip", "freeze", "--python", str(env.python), "--color", "never"],
            capture_output=True,
            text=True,
            env=uv.env(plan.spec.environment),
            timeout=120,
            check=False,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        freeze = []
    spec = plan.spec
    doc = {
        "format": BUILD_FORMAT,
        "key": env.key,
        "python": str(plan.python.path),
        "python_version": env.python_version,
        "requested_python_version": spec.python_version,
        "requirements": list(spec.requirements),
        "local_files": [list(x) for x in spec.local_files],
        "cog_sdk": spec.cog_sdk,
        "pre_install": list(spec.pre_install),
        "run_commands": list(spec.run_commands),
        "system_packages": list(spec.system_packages),
        "torch_pin": plan.torch_pin,
        "built_from": str(package_dir),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(elapsed, 3),
        "freeze": freeze,
    }
    marker = env.path / MARKER
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(marker.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, marker)
