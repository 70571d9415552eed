"""Model environments: one uv virtualenv per distinct set of dependencies, shared by content hash.

This module owns :class:`EnvironmentBuilder`, the cache of environments: planning a spec, finding
its environment, building it under a lock, resolving without building. A model's ``cog.yaml``
(through :func:`spec_from_config`) becomes an :class:`EnvironmentSpec`;
:meth:`EnvironmentBuilder.ensure` returns the :class:`Environment` for it, building it first if
needed:

1. pick a local interpreter (:mod:`.pythons`; never downloaded; nearest one plus a warning when the
   requested minor version is missing; the host's ``major.minor`` when none is requested);
2. check ``system_packages`` with dpkg; install missing ones with apt-get when root, else fail;
3. ``uv venv --python <interpreter>``; ``pip`` is added when there are shell commands to run;
4. ``pre_install`` commands (shell, cwd = package dir, the environment's ``bin`` first on ``PATH``);
5. ``uv pip install -r <requirements>`` (``cog``/``coglet`` lines are dropped with a warning, as Cog
   does), then ``uv pip install <cog SDK>`` — the same order as Cog's Dockerfile;
6. ``build.run`` commands (as for ``pre_install``);
7. a marker file written last: an environment without it is half-built and gets rebuilt.

uv does not read pip's configuration, so pip's (``find-links``, indexes, constraints, ...) is read
by :mod:`.pipconfig` and passed on, with ``--index-strategy unsafe-best-match`` to pick the best
version across all indexes as pip does. On a machine without a GPU (or for a model without ``gpu:
true``), when a ``find-links`` folder holds a CPU build of torch for the environment's Python,
``torch`` is constrained to it, so an unpinned ``torch`` (also one pulled in by another package)
never downloads a multi-GB CUDA build. A requirement that excludes that version disables the
constraint (with a warning); if resolution fails because of it, the install is retried once without
it.

The key hashes: the resolved Python version, the requirement lines, the content of local files they
reference, the Cog SDK requirement, ``pre_install``, ``build.run``, ``system_packages``, the torch
constraint, the ``PIP_*``/``UV_*`` variables of ``environment`` and, when there are shell commands,
all of ``environment``. Two models with the same dependencies share one environment.

Concurrency: one ``fcntl.flock`` per key (``<cache>/.locks/<key>.lock``), across processes and
threads; the build happens in place (a venv cannot be moved).

The pieces: :mod:`.envspec` (the data types), :mod:`.reqlines` (reading requirement lines),
:mod:`.envplan` (plan and key), :mod:`.torchpin` (the CPU torch constraint), :mod:`.envbuild` (the
build steps and the marker), :mod:`.uvrun` (running uv and commands). Their public names used
elsewhere are re-exported here.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from . import pipconfig, pythons, torchpin, uvrun
from .envbuild import MARKER, Build, is_complete, write_marker
from .envplan import BUILD_FORMAT, Plan, environment_key, resolve_python, with_local_files
from .envspec import (
    DEFAULT_COG_SDK,
    Environment,
    EnvironmentBuildError,
    EnvironmentSpec,
    Progress,
    sdk_requirement,
    spec_from_config,
)
from .home import modelyard_home
from .reqlines import install_lines, local_requirement_files
from .torchpin import gpu_available, local_torch_cpu_wheels
from .uvrun import LOG_TAIL_LINES

__all__ = [
    "BUILD_FORMAT",
    "DEFAULT_COG_SDK",
    "LOG_TAIL_LINES",
    "MARKER",
    "Environment",
    "EnvironmentBuildError",
    "EnvironmentBuilder",
    "EnvironmentSpec",
    "Plan",
    "Progress",
    "default_cache_dir",
    "gpu_available",
    "local_requirement_files",
    "local_torch_cpu_wheels",
    "sdk_requirement",
    "spec_from_config",
]


def default_cache_dir() -> Path:
    """``$MODELYARD_HOME/envs``, by default ``~/.cache/modelyard/envs``."""
    return modelyard_home() / "envs"


def _quiet(line: str) -> None:
    """The progress callback when the caller gives none."""


class EnvironmentBuilder:
    """Builds and caches environments under ``cache_dir`` (default ``$MODELYARD_HOME/envs``)."""

    def __init__(
        self,
        cache_dir: Path | str | None = None,
        *,
        uv_bin: str | None = None,
        pip_settings: pipconfig.PipSettings | None = None,
        interpreters: tuple[pythons.PythonInstall, ...] | None = None,
        has_gpu: bool | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._uv = uvrun.Uv(uv_bin, pip_settings)
        self._interpreters = interpreters
        self._has_gpu = has_gpu

    # ---- configuration, resolved lazily

    @property
    def uv_bin(self) -> str:
        return self._uv.bin

    @property
    def pip_settings(self) -> pipconfig.PipSettings:
        return self._uv.pip_settings

    @property
    def has_gpu(self) -> bool:
        if self._has_gpu is None:
            self._has_gpu = gpu_available()
        return self._has_gpu

    # ---- planning (no side effects)

    def plan(self, spec: EnvironmentSpec, package_dir: Path | str | None = None) -> Plan:
        """What ``spec`` (or a ``CogConfig``) resolves to here; relative local files are read
        from ``package_dir``."""
        if not isinstance(spec, EnvironmentSpec):
            spec = spec_from_config(spec)
        spec = with_local_files(spec, package_dir)
        python, python_warning = resolve_python(spec, self._interpreters)
        if spec.gpu and self.has_gpu:
            pin, torch_warning = None, None  # a GPU model on a GPU machine: CUDA torch is wanted
        else:
            pin, torch_warning = torchpin.cpu_torch_pin(
                spec.requirements, python, self.pip_settings.local_find_links_dirs()
            )
        key = environment_key(spec, python, pin)
        return Plan(spec, python, python_warning, pin, torch_warning, key)

    def key(self, spec: EnvironmentSpec, package_dir: Path | str | None = None) -> str:
        return self.plan(spec, package_dir).key

    def _environment(self, plan: Plan) -> Environment:
        path = self.cache_dir / plan.key
        return Environment(plan.key, path, path / "bin" / "python", plan.python.version)

    def environment_for(
        self, spec: EnvironmentSpec, package_dir: Path | str | None = None
    ) -> Environment:
        """The environment ``spec`` maps to, built or not."""
        return self._environment(self.plan(spec, package_dir))

    def lookup(
        self, spec: EnvironmentSpec, package_dir: Path | str | None = None
    ) -> Environment | None:
        """The built environment for ``spec``, or None (never builds)."""
        env = self.environment_for(spec, package_dir)
        return env if is_complete(env) else None

    # ---- building

    def ensure(
        self,
        spec: EnvironmentSpec,
        package_dir: Path | str,
        progress: Progress | None = None,
    ) -> Environment:
        """The environment for ``spec``, built first if no complete one exists."""
        say = progress if progress is not None else _quiet
        package_dir = Path(package_dir).resolve()
        plan = self.plan(spec, package_dir)
        env = self._environment(plan)
        if plan.python_warning:
            say(plan.python_warning)
        if is_complete(env):
            say(f"Using environment {env.key} (Python {env.python_version})")
            return env
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._lock(plan.key, say):
            if is_complete(env):  # built by another process while we waited
                say(f"Using environment {env.key} (Python {env.python_version})")
                return env
            if env.path.exists():
                say(f"Removing incomplete environment {env.key}")
                shutil.rmtree(env.path, ignore_errors=True)
            started = time.monotonic()
            log_path = self.cache_dir / ".logs" / f"{plan.key}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with open(log_path, "w", encoding="utf-8") as log:
                    build = Build(
                        plan, env, package_dir, self._uv, self.cache_dir, say, log, log_path
                    )
                    build.run()
            except BaseException:
                shutil.rmtree(env.path, ignore_errors=True)
                raise
            elapsed = time.monotonic() - started
            write_marker(plan, env, package_dir, elapsed, self._uv)
            say(f"Environment ready: {env.key} (Python {env.python_version}, {elapsed:.1f} s)")
            return env

    def compile(
        self,
        spec: EnvironmentSpec,
        package_dir: Path | str | None = None,
        progress: Progress | None = None,
    ) -> list[str]:
        """Resolve ``spec``'s requirements and Cog SDK without installing anything (``uv pip
        compile`` with the same indexes and constraints as a build). Returns ``name==version``
        lines.
        """
        say = progress if progress is not None else _quiet
        pdir = Path(package_dir).resolve() if package_dir is not None else None
        plan = self.plan(spec, pdir)
        if plan.python_warning:
            say(plan.python_warning)
        with tempfile.TemporaryDirectory(prefix="modelyard-compile-") as tmp:
            lines = install_lines(plan.spec.requirements, pdir, plan.spec.cog_sdk, say)
            req = Path(tmp) / "requirements.txt"
            req.write_text("\n".join(lines + [plan.spec.cog_sdk]) + "\n", encoding="utf-8")
            args = [
                self.uv_bin,
                "pip",
                "compile",
                str(req),
                "--python",
                str(plan.python.path),
                "--no-header",
                "--no-annotate",
                *self._uv.index_args(plan.torch_pin, Path(tmp)),
            ]
            proc = subprocess.run(
                args,
                capture_output=True,
                text=True,
                cwd=tmp,
                env=self._uv.env(plan.spec.environment),
                stdin=subprocess.DEVNULL,
                check=False,
            )
            for line in proc.stderr.splitlines():
                say(line)
            if proc.returncode != 0:
                tail = proc.stderr.splitlines()[-LOG_TAIL_LINES:]
                raise EnvironmentBuildError(
                    f"Could not resolve the requirements (uv pip compile exited with status "
                    f"{proc.returncode})",
                    tail,
                )
        return [
            line.strip()
            for line in proc.stdout.splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]

    @contextlib.contextmanager
    def _lock(self, key: str, say: Progress) -> Iterator[None]:
        """Hold the build lock of ``key`` (saying so when another build holds it first)."""
        lock_dir = self.cache_dir / ".locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with open(lock_dir / f"{key}.lock", "a+") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                say(f"Waiting for another build of environment {key}")
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
