"""Find the Python interpreters installed on this machine and pick one for a model.

Nothing is ever downloaded: a model gets one of the interpreters found here. Sources, in order:
``$MODELYARD_PYTHONS`` (``os.pathsep``-separated interpreter paths), pyenv's versions
(``$PYENV_ROOT/versions``, default ``~/.pyenv/versions``), interpreters installed by uv
(``uv python dir``'s default location), ``python3.X`` / ``python3`` on ``PATH`` (pyenv shims
excluded), ``/usr/local/bin``, ``/usr/bin``, and the interpreter running Modelyard. Candidates whose
version is not in their install folder's name are run once to read it; the result is cached for
the life of the process.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: Oldest Python a model environment may use: Cog's ``build.python_version`` accepts 3.10 to 3.13
#: and the current Cog SDK (``cog>=0.17``) needs 3.10 or newer.
MIN_PYTHON: tuple[int, int] = (3, 10)

_PROBE = "import sys; print('%d.%d.%d' % sys.version_info[:3], sys.implementation.name)"
_VERSION_RE = re.compile(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?\s*$")


@dataclass(frozen=True, order=True)
class PythonInstall:
    """One interpreter found on this machine."""

    version_info: tuple[int, int, int]
    path: Path

    @property
    def version(self) -> str:
        return ".".join(str(n) for n in self.version_info)

    @property
    def minor(self) -> tuple[int, int]:
        return self.version_info[:2]


def parse_version(text: str) -> tuple[int, ...]:
    """``"3.11"`` → ``(3, 11)``, ``"3.11.4"`` → ``(3, 11, 4)``; ``ValueError`` otherwise."""
    m = _VERSION_RE.match(str(text))
    if not m or m.group(2) is None:
        raise ValueError(f"invalid Python version {text!r} (expected e.g. '3.11' or '3.11.4')")
    return tuple(int(g) for g in m.groups() if g is not None)


def _candidate_paths() -> list[tuple[Path, tuple[int, int, int] | None]]:
    """Candidate interpreters, with their version when the install layout tells it for sure."""
    out: list[tuple[Path, tuple[int, int, int] | None]] = []
    explicit = os.environ.get("MODELYARD_PYTHONS", "")
    out += [(Path(p), None) for p in explicit.split(os.pathsep) if p.strip()]

    pyenv_root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    uv_root = Path(
        os.environ.get("UV_PYTHON_INSTALL_DIR")
        or Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
        / "uv"
        / "python"
    )
    # pyenv names its CPython builds "3.11.7", uv "cpython-3.11.7-linux-x86_64-gnu": trust those
    # names (saves starting every interpreter); anything else (pypy, conda, ...) is probed.
    for root, pattern in (
        (pyenv_root / "versions", r"(\d+)\.(\d+)\.(\d+)"),
        (uv_root, r"cpython-(\d+)\.(\d+)\.(\d+)-.*"),
    ):
        try:
            entries = sorted(root.iterdir())
        except OSError:
            continue
        for entry in entries:
            m = re.fullmatch(pattern, entry.name)
            known = (int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None
            out.append((entry / "bin" / "python3", known))

    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    dirs += ["/usr/local/bin", "/usr/bin"]
    for d in dirs:
        if "shims" in Path(d).parts:  # pyenv/asdf shims dispatch to "the active" version
            continue
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            if re.fullmatch(r"python3(\.\d+)?", name):
                out.append((Path(d) / name, None))

    for exe in (getattr(sys, "_base_executable", None), sys.executable):
        if exe:
            out.append((Path(exe), None))
    return out


def _probe(path: Path) -> PythonInstall | None:
    try:
        proc = subprocess.run(
            [str(path), "-I", "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    parts = proc.stdout.split()
    if len(parts) != 2 or parts[1] != "cpython":
        return None
    try:
        major, minor, micro = (int(x) for x in parts[0].split("."))
    except ValueError:
        return None
    return PythonInstall((major, minor, micro), path)


@functools.lru_cache(maxsize=1)
def find_pythons() -> tuple[PythonInstall, ...]:
    """Every CPython 3 interpreter found, one per real path, sorted by version."""
    seen: set[str] = set()
    found: list[PythonInstall] = []
    for cand, known in _candidate_paths():
        try:
            if not cand.is_file() or not os.access(cand, os.X_OK):
                continue
            real = os.path.realpath(cand)
        except OSError:
            continue
        if real in seen:
            continue
        seen.add(real)
        inst = PythonInstall(known, cand) if known else _probe(cand)
        if inst is not None and inst.version_info[0] == 3:
            found.append(inst)
    # Several paths may hold the same version (e.g. a venv's python and its base): keep the first.
    by_version: dict[tuple[int, int, int], PythonInstall] = {}
    for inst in found:
        by_version.setdefault(inst.version_info, inst)
    return tuple(sorted(by_version.values()))


def default_python_version() -> str:
    """The Python a model gets when its ``cog.yaml`` names none: the host's ``major.minor``.

    Cog's own default is 3.13 on recent versions; we use the interpreter Modelyard runs on (3.11 on
    the reference machine) because that is the one version known to be installed, and the one for
    which local wheels (e.g. a CPU build of torch) are most likely to exist.
    """
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def choose_python(
    requested: str | None,
    available: tuple[PythonInstall, ...] | list[PythonInstall] | None = None,
) -> tuple[PythonInstall, str | None]:
    """Pick the interpreter for ``requested`` (``"3.11"``, ``"3.11.4"`` or ``None``).

    Matching is on ``major.minor`` (the newest patch of that minor wins). When that minor is not
    installed, or is older than :data:`MIN_PYTHON`, the nearest supported minor is used (on a tie,
    the older one) and a warning line is returned alongside. Raises ``LookupError`` when no
    supported interpreter exists at all, ``ValueError`` for a malformed version.
    """
    if available is None:
        available = find_pythons()
    supported = sorted(p for p in available if p.minor >= MIN_PYTHON)
    if not supported:
        raise LookupError(
            f"no Python {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer was found on this machine "
            "(looked in $MODELYARD_PYTHONS, pyenv, uv, PATH)"
        )
    req = requested if requested not in (None, "") else default_python_version()
    parsed = parse_version(str(req))
    want = (parsed[0], parsed[1])

    exact = [p for p in supported if p.minor == want]
    if exact:
        return exact[-1], None

    def distance(p: PythonInstall) -> tuple[int, int]:
        d = abs((p.minor[0] - want[0]) * 100 + p.minor[1] - want[1])
        return (d, 0 if p.minor < want else 1)  # tie → the older one

    best_minor = min(supported, key=distance).minor
    best = [p for p in supported if p.minor == best_minor][-1]
    label = str(req).strip()
    if want < MIN_PYTHON:
        why = f"is not supported (Modelyard needs {MIN_PYTHON[0]}.{MIN_PYTHON[1]} or newer)"
    else:
        why = "is not available here"
    return best, f"warning: Python {label} {why}; using {best.version}"
