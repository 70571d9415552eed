"""Model environments: one uv virtualenv per distinct set of dependencies, shared by content hash.

A model's ``cog.yaml`` (through :func:`spec_from_config`) becomes an :class:`EnvironmentSpec`.
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
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import pipconfig, pythons, sysdeps

DEFAULT_COG_SDK = "cog==0.23.1"
#: Bumped when the layout or the build steps change, so old environments are not reused.
BUILD_FORMAT = 1
MARKER = Path(".modelyard") / "environment.json"
LOG_TAIL_LINES = 20

Progress = Callable[[str], None]

_ARCHIVES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar")
_MANAGED = {"cog", "coglet"}  # the SDK is installed by the builder, never from requirements
_COMMENT = re.compile(r"(^|\s+)#.*$")
_PATH_OPTION = re.compile(
    r"^(?P<opt>-e|--editable|-r|--requirement|-c|--constraint|-f|--find-links)"
    r"(?P<sep>\s+|=)(?P<path>\S+)(?P<rest>.*)$"
)
_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*(.*)$")


class EnvironmentBuildError(RuntimeError):
    """A build failed. ``str()`` is one clear line, then the tail of the failing step's output."""

    def __init__(
        self, message: str, log_tail: list[str] | tuple[str, ...] = (), log_path: Path | None = None
    ):
        self.message = message
        self.log_tail = list(log_tail)
        self.log_path = log_path
        text = message
        if self.log_tail:
            text += "\n" + "\n".join("  " + line for line in self.log_tail)
        if log_path is not None:
            text += f"\nFull log: {log_path}"
        super().__init__(text)


@dataclass(frozen=True)
class Environment:
    key: str
    path: Path
    python: Path
    python_version: str

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"


@dataclass(frozen=True)
class EnvironmentSpec:
    """What an environment is built from (a subset of ``cog.yaml``'s ``build`` section)."""

    python_version: str | None = None
    requirements: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()
    run_commands: tuple[str, ...] = ()
    pre_install: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict, hash=False)
    cog_sdk: str = DEFAULT_COG_SDK
    gpu: bool = False
    #: ``(path as written in the requirements, "sha256:<hex>")`` of local files/folders referenced
    #: by the requirements; filled from the package dir by :func:`spec_from_config` and ``ensure``.
    local_files: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name in ("requirements", "system_packages", "run_commands", "pre_install"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(str(v) for v in value))
        object.__setattr__(self, "environment", dict(self.environment or {}))
        object.__setattr__(self, "local_files", tuple(tuple(x) for x in self.local_files))
        if self.python_version is not None:
            object.__setattr__(self, "python_version", str(self.python_version).strip() or None)

    @classmethod
    def from_config(cls, config: Any) -> EnvironmentSpec:
        return spec_from_config(config)


def sdk_requirement(sdk_version: str | None) -> str:
    """``build.sdk_version`` → the requirement for the Cog SDK (default :data:`DEFAULT_COG_SDK`)."""
    if sdk_version is None or not str(sdk_version).strip():
        return DEFAULT_COG_SDK
    v = str(sdk_version).strip()
    if v.lower() in ("prerelease", "pre"):
        return "cog>=0.0.0.dev0"  # an explicit pre-release bound lets uv pick pre-releases of cog
    if v[0] in "<>=!~":
        return "cog" + v
    return "cog==" + v


def spec_from_config(config: Any) -> EnvironmentSpec:
    """An :class:`EnvironmentSpec` from a ``modelyard.cogspec.config.CogConfig`` (duck-typed)."""
    requirements = tuple(getattr(config, "requirements", ()) or ())
    package_dir = getattr(config, "package_dir", None)
    local = local_requirement_files(requirements, Path(package_dir)) if package_dir else ()
    return EnvironmentSpec(
        python_version=getattr(config, "python_version", None),
        requirements=requirements,
        system_packages=tuple(getattr(config, "system_packages", ()) or ()),
        run_commands=tuple(getattr(config, "run_commands", ()) or ()),
        pre_install=tuple(getattr(config, "pre_install", ()) or ()),
        environment=dict(getattr(config, "environment", None) or {}),
        cog_sdk=sdk_requirement(getattr(config, "sdk_version", None)),
        gpu=bool(getattr(config, "gpu", False)),
        local_files=local,
    )


def default_cache_dir() -> Path:
    home = os.environ.get("MODELYARD_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "modelyard"
    return base / "envs"


# --------------------------------------------------------------------------- requirement lines


def _clean(line: str) -> str:
    return _COMMENT.sub("", line).strip()


def _requirement_name(line: str) -> str | None:
    """The normalized project name of a plain requirement line, else None (options, paths, URLs)."""
    if not line or line.startswith(("-", ".")) or "://" in line.split("@")[0]:
        return None
    m = _NAME.match(line)
    if not m:
        return None
    rest = m.group(3)
    if rest and rest[0] not in "<>=!~;@(,":
        return None
    return re.sub(r"[-_.]+", "-", m.group(1)).lower()


def _local_ref(line: str) -> tuple[str, str, str] | None:
    """Split a requirement line around the local path it references: ``(before, path, after)``.

    ``path`` is as written (relative or absolute, without ``file:``). None when the line references
    no local path (a name, a URL, an option without a path).
    """
    m = _PATH_OPTION.match(line)
    if m:
        path = m.group("path")
        if "://" in path and not path.startswith("file:"):
            return None
        before = m.group("opt") + m.group("sep")
        if path.startswith("file:"):
            stripped = _strip_file_scheme(path)
            before += path[: len(path) - len(stripped)]
            path = stripped
        return before, path, m.group("rest")
    # "name @ file:..." or "file:..."
    fm = re.match(r"^(?P<pre>(?:[^@\s]+\s*@\s*)?)(?P<url>file:[^\s;]+)(?P<rest>.*)$", line)
    if fm:
        url = fm.group("url")
        path = _strip_file_scheme(url)
        return fm.group("pre") + url[: len(url) - len(path)], path, fm.group("rest")
    if "@" in line.split(";")[0] or "://" in line:
        return None
    token = line.split(";", 1)[0].split()[0] if line.split(";", 1)[0].split() else ""
    bare = re.sub(r"\[[^\]]*\]$", "", token)
    pathlike = bare.startswith((".", "/", "~")) or "/" in bare or bare.lower().endswith(_ARCHIVES)
    if not pathlike or line.startswith("-"):
        return None
    return "", bare, line[len(bare) :]


def _strip_file_scheme(url: str) -> str:
    path = url[len("file:") :]
    if path.startswith("//"):
        path = path[2:]
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
    return urllib.parse.unquote(path)


def _resolve_local(path: str, package_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and package_dir is not None:
        p = Path(package_dir) / p
    return p


def _hash_path(path: Path) -> str:
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return "sha256:" + h.hexdigest()
    skip = {".git", "__pycache__", ".cog", ".venv", "node_modules", ".mypy_cache", ".pytest_cache"}
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        for name in sorted(files):
            fp = Path(root) / name
            rel = fp.relative_to(path).as_posix()
            try:
                st = fp.stat()
            except OSError:
                continue
            h.update(rel.encode() + b"\0")
            if st.st_size <= (4 << 20):
                h.update(bytes.fromhex(_hash_path(fp)[len("sha256:") :]))
            else:  # big files (weights): size and mtime stand in for the content
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return "sha256:" + h.hexdigest()


def local_requirement_files(
    requirements: tuple[str, ...] | list[str], package_dir: Path | None
) -> tuple[tuple[str, str], ...]:
    """``(path as written, content hash)`` of each existing local file/folder the lines name."""
    out: list[tuple[str, str]] = []
    for raw in requirements:
        ref = _local_ref(_clean(raw))
        if ref is None:
            continue
        p = _resolve_local(ref[1], package_dir)
        if p.exists():
            out.append((ref[1], _hash_path(p)))
    return tuple(out)


def _rewrite_line(line: str, package_dir: Path | None) -> str:
    """Make the local path a line references absolute (uv runs outside the package dir)."""
    ref = _local_ref(line)
    if ref is None or package_dir is None:
        return line
    before, path, after = ref
    if Path(path).expanduser().is_absolute():
        return line
    return before + str(_resolve_local(path, package_dir).resolve()) + after


# --------------------------------------------------------------------------- torch (CPU) pinning


def _parse_version(v: str) -> Any:
    try:
        from packaging.version import Version

        return Version(v)
    except (ImportError, ValueError):
        nums = re.findall(r"\d+", v.split("+")[0])
        return tuple(int(n) for n in nums)


def local_torch_cpu_wheels(find_links_dirs: list[Path], python: pythons.PythonInstall) -> list[str]:
    """Versions of CPU torch wheels (``+cpu``) in the given folders usable by ``python``."""
    tag = "cp{}{}".format(*python.minor)
    machine = platform.machine().lower()
    versions = []
    for d in find_links_dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if not name.endswith(".whl"):
                continue
            parts = name[: -len(".whl")].split("-")
            if len(parts) < 5 or parts[0].lower() != "torch":
                continue
            version, pytags, plats = parts[1], parts[-3].split("."), parts[-1].split(".")
            if "+cpu" not in version:
                continue
            if tag not in pytags and "py3" not in pytags:
                continue
            if not any(
                p == "any" or (p.startswith(("manylinux", "linux")) and p.endswith(machine))
                for p in plats
            ) or not sys.platform.startswith("linux"):
                continue
            versions.append(version)
    return sorted(set(versions), key=_parse_version)


def _spec_allows(specifier: str, version: str) -> bool | None:
    """Whether a PEP 440 specifier allows ``version``; None when it cannot be decided."""
    specifier = specifier.split(";", 1)[0].strip().strip("()")
    if not specifier:
        return True
    try:
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(specifier).contains(version, prereleases=True)
    except (ImportError, ValueError):
        return None


def gpu_available() -> bool:
    """An NVIDIA GPU is visible (``MODELYARD_GPU=0/1`` overrides the detection)."""
    forced = os.environ.get("MODELYARD_GPU")
    if forced is not None and forced.strip():
        return forced.strip().lower() not in ("0", "false", "no", "off")
    if Path("/proc/driver/nvidia/version").exists():
        return True
    return any(Path("/dev").glob("nvidia[0-9]*"))


# --------------------------------------------------------------------------- the builder


@dataclass(frozen=True)
class _Plan:
    spec: EnvironmentSpec
    python: pythons.PythonInstall
    python_warning: str | None
    torch_pin: str | None
    torch_warning: str | None
    key: str


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
    ):
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._uv_bin = uv_bin
        self._pip = pip_settings
        self._interpreters = interpreters
        self._has_gpu = has_gpu

    # ---- configuration, resolved lazily

    @property
    def uv_bin(self) -> str:
        if self._uv_bin is None:
            try:
                import uv

                self._uv_bin = uv.find_uv_bin()
            except (ImportError, FileNotFoundError):
                found = shutil.which("uv")
                if not found:
                    raise EnvironmentBuildError(
                        "uv is not installed (pip install uv); it builds model environments"
                    )
                self._uv_bin = found
        return self._uv_bin

    @property
    def pip_settings(self) -> pipconfig.PipSettings:
        if self._pip is None:
            self._pip = pipconfig.read_pip_config()
        return self._pip

    @property
    def has_gpu(self) -> bool:
        if self._has_gpu is None:
            self._has_gpu = gpu_available()
        return self._has_gpu

    # ---- planning (no side effects)

    def _spec(self, spec: Any) -> EnvironmentSpec:
        return spec if isinstance(spec, EnvironmentSpec) else spec_from_config(spec)

    def plan(self, spec: EnvironmentSpec, package_dir: Path | str | None = None) -> _Plan:
        spec = self._spec(spec)
        if package_dir is not None:
            local = local_requirement_files(spec.requirements, Path(package_dir))
            if local != spec.local_files:
                spec = _replace(spec, local_files=local)
        try:
            python, warning = pythons.choose_python(spec.python_version, self._interpreters)
        except (LookupError, ValueError) as e:
            raise EnvironmentBuildError(str(e)) from None
        pin, torch_warning = self._torch_pin(spec, python)
        return _Plan(spec, python, warning, pin, torch_warning, self._key(spec, python, pin))

    def _torch_pin(
        self, spec: EnvironmentSpec, python: pythons.PythonInstall
    ) -> tuple[str | None, str | None]:
        if spec.gpu and self.has_gpu:
            return None, None
        versions = local_torch_cpu_wheels(self.pip_settings.local_find_links_dirs(), python)
        if not versions:
            return None, None
        best = versions[-1]
        for raw in spec.requirements:
            line = _clean(raw)
            if _requirement_name(line) != "torch":
                continue
            rest = _NAME.match(line).group(3)  # type: ignore[union-attr]
            if rest.startswith("@"):
                return None, None  # a direct URL: the model chose its own build
            allowed = _spec_allows(rest, best)
            if allowed is None or not allowed:
                return None, (
                    f"warning: requirement '{line}' excludes the local CPU build of torch "
                    f"({best}); it will be downloaded and may be a large CUDA build"
                )
        return f"torch=={best}", None

    def _key(self, spec: EnvironmentSpec, python: pythons.PythonInstall, pin: str | None) -> str:
        env = spec.environment
        if spec.run_commands or spec.pre_install:
            env_part = dict(sorted(env.items()))
        else:
            env_part = {k: v for k, v in sorted(env.items()) if k.startswith(("PIP_", "UV_"))}
        doc = {
            "format": BUILD_FORMAT,
            "python": python.version,
            "requirements": [line for line in (_clean(r) for r in spec.requirements) if line],
            "local_files": [list(x) for x in spec.local_files],
            "sdk": spec.cog_sdk,
            "pre_install": list(spec.pre_install),
            "run": list(spec.run_commands),
            "system_packages": sorted(set(spec.system_packages)),
            "environment": env_part,
            "torch": pin,
            "platform": f"{sys.platform}-{platform.machine()}",
        }
        blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    def key(self, spec: EnvironmentSpec, package_dir: Path | str | None = None) -> str:
        return self.plan(spec, package_dir).key

    def _environment(self, plan: _Plan) -> Environment:
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
        return env if _is_complete(env) else None

    # ---- building

    def ensure(
        self,
        spec: EnvironmentSpec,
        package_dir: Path | str,
        progress: Progress | None = None,
    ) -> Environment:
        """The environment for ``spec``, built first if no complete one exists."""
        say: Progress = progress if progress is not None else (lambda line: None)
        package_dir = Path(package_dir).resolve()
        plan = self.plan(spec, package_dir)
        env = self._environment(plan)
        if plan.python_warning:
            say(plan.python_warning)
        if _is_complete(env):
            say(f"Using environment {env.key} (Python {env.python_version})")
            return env
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with self._lock(plan.key, say):
            if _is_complete(env):  # built by another process while we waited
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
                    self._build(plan, env, package_dir, say, log, log_path)
            except BaseException:
                shutil.rmtree(env.path, ignore_errors=True)
                raise
            elapsed = time.monotonic() - started
            self._write_marker(plan, env, package_dir, elapsed)
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
        say: Progress = progress if progress is not None else (lambda line: None)
        pdir = Path(package_dir).resolve() if package_dir is not None else None
        plan = self.plan(spec, pdir)
        if plan.python_warning:
            say(plan.python_warning)
        with tempfile.TemporaryDirectory(prefix="modelyard-compile-") as tmp:
            lines = self._requirement_lines(plan.spec, pdir, say)
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
                *self._index_args(plan, Path(tmp)),
            ]
            proc = subprocess.run(
                args,
                capture_output=True,
                text=True,
                cwd=tmp,
                env=self._uv_env(plan.spec),
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

    # ---- internals

    @contextlib.contextmanager
    def _lock(self, key: str, say: Progress) -> Iterator[None]:
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

    def _uv_env(self, spec: EnvironmentSpec) -> dict[str, str]:
        env = dict(os.environ)
        env.update({k: v for k, v in spec.environment.items() if k.startswith("UV_")})
        env.update(self.pip_settings.uv_env(env))
        env["UV_PYTHON_DOWNLOADS"] = "never"
        env["NO_COLOR"] = "1"
        for name in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONHOME", "UV_SYSTEM_PYTHON", "UV_PYTHON"):
            env.pop(name, None)
        return env

    def _index_args(self, plan: _Plan, workdir: Path, torch_pin: bool = True) -> list[str]:
        args = ["--index-strategy", "unsafe-best-match", *self.pip_settings.uv_args()]
        if plan.torch_pin and torch_pin:
            pin_file = workdir / "torch-constraint.txt"
            pin_file.write_text(plan.torch_pin + "\n", encoding="utf-8")
            args += ["--constraints", str(pin_file)]
        return args

    def _requirement_lines(
        self, spec: EnvironmentSpec, package_dir: Path | None, say: Progress
    ) -> list[str]:
        out = []
        for raw in spec.requirements:
            line = _clean(raw)
            if not line:
                continue
            if _requirement_name(line) in _MANAGED:
                say(
                    f"warning: '{line}' found in requirements: ignored, the Cog SDK is installed "
                    f"as {spec.cog_sdk} (set build.sdk_version in cog.yaml to change it)"
                )
                continue
            out.append(_rewrite_line(line, package_dir))
        return out

    def _stream(
        self,
        args: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        say: Progress,
        log: Any,
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
                for line in chunk.rstrip("\n").split("\r"):
                    line = line.rstrip()
                    if not line or line.startswith("Activate with: "):
                        continue
                    log.write(line + "\n")
                    tail.append(line)
                    say(line)
                log.flush()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        status = proc.wait()
        log.write(f"[exit status {status}]\n")
        log.flush()
        return status, list(tail)

    def _shell_env(self, env: Environment, spec: EnvironmentSpec) -> dict[str, str]:
        out = dict(os.environ)
        for name in ("PYTHONHOME", "PYTHONPATH", "CONDA_PREFIX", "UV_SYSTEM_PYTHON", "UV_PYTHON"):
            out.pop(name, None)
        out.update(spec.environment)
        out["VIRTUAL_ENV"] = str(env.path)
        out["PATH"] = str(env.bin_dir) + os.pathsep + out.get("PATH", os.defpath)
        return out

    def _build(
        self,
        plan: _Plan,
        env: Environment,
        package_dir: Path,
        say: Progress,
        log: Any,
        log_path: Path,
    ) -> None:
        spec = plan.spec

        def fail(message: str, tail: list[str]) -> EnvironmentBuildError:
            log.write(f"ERROR: {message}\n")
            return EnvironmentBuildError(message, tail, log_path)

        # 1. system packages
        if spec.system_packages:
            self._system_packages(spec, say, log, fail)

        # 2. the virtualenv
        say(f"Creating environment (Python {plan.python.version})")
        uv_env = self._uv_env(spec)
        status, tail = self._stream(
            [
                self.uv_bin,
                "venv",
                str(env.path),
                "--python",
                str(plan.python.path),
                "--no-progress",
                "--color",
                "never",
            ],
            cwd=self.cache_dir,
            env=uv_env,
            say=say,
            log=log,
        )
        if status != 0 or not env.python.exists():
            raise fail(
                f"Could not create the environment with Python {plan.python.version} "
                f"(uv venv exited with status {status})",
                tail,
            )
        meta = env.path / MARKER.parent
        meta.mkdir(parents=True, exist_ok=True)
        pin = {"on": True}
        if plan.torch_pin and any(
            (_requirement_name(_clean(r)) or "").startswith("torch") for r in spec.requirements
        ):
            say(f"Using the local CPU build of torch ({plan.torch_pin}) for any torch requirement")
        if plan.torch_warning:
            say(plan.torch_warning)

        def uv_install(what: list[str], label: str, extra: list[str] = ()) -> None:
            args = [
                self.uv_bin,
                "pip",
                "install",
                "--python",
                str(env.python),
                "--no-progress",
                "--color",
                "never",
                *self._index_args(plan, meta, pin["on"]),
                *extra,
                *what,
            ]
            status, tail = self._stream(args, cwd=meta, env=uv_env, say=say, log=log)
            if status != 0:
                raise fail(f"{label} (uv pip install exited with status {status})", tail)

        shell_env = self._shell_env(env, spec)
        commands = bool(spec.run_commands or spec.pre_install)
        if commands:  # build commands often call pip, which Cog's images have
            say("Installing pip (for the build commands)")
            uv_install(["pip"], "Could not install pip into the environment")

        # 3. pre_install (before the requirements, as in Cog before 0.9)
        for cmd in spec.pre_install:
            self._run_command(cmd, "pre_install", package_dir, shell_env, say, log, fail)

        # 4. requirements, then the Cog SDK (Cog's order: the SDK wins on conflicts)
        lines = self._requirement_lines(spec, package_dir, say)
        if lines:
            req_file = meta / "requirements.txt"
            req_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
            n = sum(
                1
                for line in lines
                if not line.startswith("-") or line.startswith(("-e", "--editable"))
            )
            say(f"Installing {n} requirement{'s' if n != 1 else ''}")
            try:
                uv_install(["-r", str(req_file)], "Could not install the model's requirements")
            except EnvironmentBuildError as e:
                if not plan.torch_pin or "torch" not in "\n".join(e.log_tail):
                    raise
                say(
                    f"warning: the requirements conflict with the local CPU build of torch "
                    f"({plan.torch_pin}); retrying without it (a CUDA build may be downloaded)"
                )
                pin["on"] = False
                uv_install(["-r", str(req_file)], "Could not install the model's requirements")
        say(f"Installing {spec.cog_sdk}")
        uv_install([spec.cog_sdk], f"Could not install the Cog SDK ({spec.cog_sdk})")

        # 5. build.run
        for cmd in spec.run_commands:
            self._run_command(cmd, "build.run", package_dir, shell_env, say, log, fail)

    def _run_command(
        self,
        cmd: str,
        kind: str,
        package_dir: Path,
        shell_env: Mapping[str, str],
        say: Progress,
        log: Any,
        fail: Callable[[str, list[str]], EnvironmentBuildError],
    ) -> None:
        say(f"Running {kind}: {cmd}")
        status, tail = self._stream(
            ["/bin/sh", "-c", cmd],
            cwd=package_dir,
            env=shell_env,
            say=say,
            log=log,
            shell_display=cmd,
        )
        if status != 0:
            raise fail(f"{kind} command failed (exit status {status}): {cmd}", tail)

    def _system_packages(
        self,
        spec: EnvironmentSpec,
        say: Progress,
        log: Any,
        fail: Callable[[str, list[str]], EnvironmentBuildError],
    ) -> None:
        if not sysdeps.dpkg_available():
            raise fail(
                "Cannot check system packages ("
                + ", ".join(spec.system_packages)
                + "): dpkg-query not found; only Debian/Ubuntu hosts are supported",
                [],
            )
        say("Checking system packages: " + " ".join(spec.system_packages))
        missing = sysdeps.missing_packages(spec.system_packages)
        if not missing:
            return
        cmd = sysdeps.install_command(missing)
        if not sysdeps.is_root():
            raise fail(
                "Missing system packages: "
                + ", ".join(missing)
                + ". Install them with: sudo apt-get install -y "
                + " ".join(missing),
                [],
            )
        apt_env = sysdeps.apt_env()
        if sysdeps.apt_lists_stale():
            say("Updating apt package lists")
            status, tail = self._stream(
                ["apt-get", "update"], cwd=Path("/"), env=apt_env, say=say, log=log
            )
            if status != 0:
                raise fail(f"apt-get update failed (exit status {status})", tail)
        say("Installing system packages: " + " ".join(missing))
        status, tail = self._stream(cmd, cwd=Path("/"), env=apt_env, say=say, log=log)
        still = sysdeps.missing_packages(missing) if status == 0 else missing
        if status != 0 or still:
            raise fail(
                "Could not install system packages "
                + ", ".join(still or missing)
                + f" ({' '.join(cmd)} exited with status {status})",
                tail,
            )

    def _write_marker(
        self, plan: _Plan, env: Environment, package_dir: Path, elapsed: float
    ) -> None:
        try:
            freeze = subprocess.run(
                [self.uv_bin, "pip", "freeze", "--python", str(env.python), "--color", "never"],
                capture_output=True,
                text=True,
                env=self._uv_env(plan.spec),
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


def _is_complete(env: Environment) -> bool:
    return (env.path / MARKER).is_file() and env.python.exists()


def _replace(spec: EnvironmentSpec, **changes: Any) -> EnvironmentSpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)
