"""Reading a model's requirement lines: project names, the local files they reference, uv's copy.

Lines are those of ``requirements.txt`` as ``cog.yaml`` lists them. This module knows pip's line
syntax well enough to:

- name the project of a plain requirement (``Torch[extra] >= 2`` → ``torch``), so that ``cog``
  and ``coglet`` can be dropped (the builder installs the Cog SDK itself) and ``torch`` recognised;
- find the local file or folder a line references (``./wheels/x.whl``, ``-e ../lib``,
  ``name @ file:///...``, ``-r other.txt``, ...), hash its content for the environment key, and
  make its path absolute for uv, which runs outside the package dir.
"""

from __future__ import annotations

import hashlib
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

from modelyard.cogspec.config import strip_comment

#: Projects the builder installs itself (the Cog SDK), never from a model's requirements.
MANAGED = frozenset({"cog", "coglet"})

_ARCHIVES = (".whl", ".zip", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar")
_PATH_OPTION = re.compile(
    r"^(?P<opt>-e|--editable|-r|--requirement|-c|--constraint|-f|--find-links)"
    r"(?P<sep>\s+|=)(?P<path>\S+)(?P<rest>.*)$"
)
_FILE_URL = re.compile(r"^(?P<pre>(?:[^@\s]+\s*@\s*)?)(?P<url>file:[^\s;]+)(?P<rest>.*)$")
_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*(.*)$")
#: Folders that never change what a local package installs, skipped when hashing one.
_HASH_SKIP = {
    ".git",
    "__pycache__",
    ".cog",
    ".venv",
    "node_modules",
    ".mypy_cache",
    ".pytest_cache",
}
#: Files above this size (weights) are hashed by size and mtime: reading them would be slow.
_HASH_MAX_BYTES = 4 << 20


def clean(line: str) -> str:
    """``line`` without its comment and surrounding whitespace."""
    return strip_comment(line).strip()


def requirement_parts(line: str) -> tuple[str, str] | None:
    """``(normalized project name, rest)`` of a plain requirement line (``rest`` is the version
    specifier, marker or ``@ url`` after the name and extras), else None (options, paths, URLs)."""
    if not line or line.startswith(("-", ".")) or "://" in line.split("@")[0]:
        return None
    m = _NAME.match(line)
    if not m:
        return None
    rest = m.group(3)
    if rest and rest[0] not in "<>=!~;@(,":
        return None
    return re.sub(r"[-_.]+", "-", m.group(1)).lower(), rest


def requirement_name(line: str) -> str | None:
    """The normalized project name of a plain requirement line, else None."""
    parts = requirement_parts(line)
    return parts[0] if parts else None


def _strip_file_scheme(url: str) -> str:
    path = url[len("file:") :]
    if path.startswith("//"):
        path = path[2:]
        if path.startswith("localhost/"):
            path = path[len("localhost") :]
    return urllib.parse.unquote(path)


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
    fm = _FILE_URL.match(line)  # "name @ file:..." or "file:..."
    if fm:
        url = fm.group("url")
        path = _strip_file_scheme(url)
        return fm.group("pre") + url[: len(url) - len(path)], path, fm.group("rest")
    if "@" in line.split(";")[0] or "://" in line:
        return None
    words = line.split(";", 1)[0].split()
    bare = re.sub(r"\[[^\]]*\]$", "", words[0] if words else "")
    pathlike = bare.startswith((".", "/", "~")) or "/" in bare or bare.lower().endswith(_ARCHIVES)
    if not pathlike or line.startswith("-"):
        return None
    return "", bare, line[len(bare) :]


def _resolve_local(path: str, package_dir: Path | None) -> Path:
    p = Path(path).expanduser()
    if not p.is_absolute() and package_dir is not None:
        p = Path(package_dir) / p
    return p


def _digest(path: Path) -> bytes:
    """SHA-256 of a file's bytes, or of a folder's relative paths and their files' digests."""
    h = hashlib.sha256()
    if path.is_file():
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.digest()
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in _HASH_SKIP)
        for name in sorted(files):
            fp = Path(root) / name
            try:
                st = fp.stat()
            except OSError:
                continue
            h.update(fp.relative_to(path).as_posix().encode() + b"\0")
            if st.st_size <= _HASH_MAX_BYTES:
                h.update(_digest(fp))
            else:
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.digest()


def hash_path(path: Path) -> str:
    """``"sha256:<hex>"`` of a local file or folder's content."""
    return "sha256:" + _digest(path).hex()


def local_requirement_files(
    requirements: Iterable[str], package_dir: Path | None
) -> tuple[tuple[str, str], ...]:
    """``(path as written, content hash)`` of each existing local file/folder the lines name."""
    out: list[tuple[str, str]] = []
    for raw in requirements:
        ref = _local_ref(clean(raw))
        if ref is None:
            continue
        p = _resolve_local(ref[1], package_dir)
        if p.exists():
            out.append((ref[1], hash_path(p)))
    return tuple(out)


def local_paths(requirements: Iterable[str]) -> tuple[str, ...]:
    """The local paths the lines reference, as written (``-r x.txt`` → ``x.txt``)."""
    refs = (_local_ref(clean(raw)) for raw in requirements)
    return tuple(ref[1] for ref in refs if ref is not None)


def _absolute_paths(line: str, package_dir: Path | None) -> str:
    """Make the local path a line references absolute (uv runs outside the package dir)."""
    ref = _local_ref(line)
    if ref is None or package_dir is None:
        return line
    before, path, after = ref
    if Path(path).expanduser().is_absolute():
        return line
    return before + str(_resolve_local(path, package_dir).resolve()) + after


def install_lines(
    requirements: Iterable[str],
    package_dir: Path | None,
    cog_sdk: str,
    say: Callable[[str], None],
) -> list[str]:
    """The lines to give ``uv pip install -r``: comments and blank lines removed, ``cog`` and
    ``coglet`` dropped with a warning (as Cog does), local paths made absolute."""
    out = []
    for raw in requirements:
        line = clean(raw)
        if not line:
            continue
        if requirement_name(line) in MANAGED:
            say(
                f"warning: '{line}' found in requirements: ignored, the Cog SDK is installed "
                f"as {cog_sdk} (set build.sdk_version in cog.yaml to change it)"
            )
            continue
        out.append(_absolute_paths(line, package_dir))
    return out
