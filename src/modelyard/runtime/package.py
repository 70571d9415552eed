"""A Cog package as one deterministic archive: what `modelyard push` uploads and a server unpacks.

`pack_package(folder)` makes a gzip'd tar whose bytes depend only on the package's content: entries
sorted by path, mtime 0, owner 0/0 with empty names, modes 0o644/0o755 (a file keeps only whether it
is executable), a gzip header with mtime 0 and no file name. Its sha256 is the version id on the
server. Left out: `.git/`, `__pycache__/`, `.cog/`, `.venv/` at any depth, `*.pyc`, and what the
package's `.dockerignore` excludes, read with Docker's rules as `cog build` does (patterns anchored at
the package root, `*`/`?`/`[...]` within one path segment, `**` across segments, a match on a
folder excludes its content, `!` re-includes, the last matching line wins); `cog.yaml` is always
kept. A symlink is stored as the file or folder it points to when that is inside the package; one
pointing outside is an error.

`unpack_package(archive, destination)` accepts only files and folders at relative paths without
`..`, extracts them with tarfile's `data` filter (a second guard against paths leaving the folder)
into a temporary sibling folder and renames that into place, so an existing destination is left as
it is and concurrent unpacks of the same archive are safe.

See docs/push.md for the archive format and the push endpoint.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_LIMIT = 2 * 1024**3  # bytes of file content a package may hold
ALWAYS_EXCLUDED_DIRS = frozenset({".git", "__pycache__", ".cog", ".venv"})
ALWAYS_EXCLUDED_SUFFIXES = (".pyc",)
_CHUNK = 1024 * 1024


class PackageError(ValueError):
    """A package that cannot be packed or an archive that cannot be unpacked; `str()` is one line."""


@dataclass(frozen=True)
class PackedPackage:
    """A packed package: the archive's bytes, the hex sha256 of those bytes, the number of files
    and their total size in bytes (before compression)."""

    data: bytes
    sha256: str
    files: int
    size: int


class DockerIgnore:
    """The patterns of a `.dockerignore`, matched as Docker (moby's patternmatcher) matches them."""

    def __init__(self, lines: list[str]) -> None:
        self.patterns: list[tuple[re.Pattern[str], bool]] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:].strip()
            line = os.path.normpath(line).lstrip("/") if line else line
            if not line or line == ".":
                continue
            self.patterns.append((re.compile(_pattern_regex(line)), negate))
        self.has_negations = any(negate for _, negate in self.patterns)

    @classmethod
    def read(cls, directory: Path) -> DockerIgnore:
        path = directory / ".dockerignore"
        if not path.is_file():
            return cls([])
        return cls(path.read_text(encoding="utf-8", errors="replace").splitlines())

    def excludes(self, relpath: str) -> bool:
        """Whether the slash-separated path relative to the package root is left out."""
        parents = relpath.split("/")[:-1]
        prefixes = ["/".join(parents[: i + 1]) for i in range(len(parents))]
        excluded = False
        for regex, negate in self.patterns:
            if negate != excluded:  # only an exclusion can flip an excluded path back
                continue
            if regex.match(relpath) or any(regex.match(p) for p in prefixes):
                excluded = not negate
        return excluded


def _pattern_regex(pattern: str) -> str:
    out, i = ["^"], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out.append(".*" if i >= len(pattern) else "(.*/)?")
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            i = _char_class(pattern, i, out)
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return "".join(out)


def _char_class(pattern: str, start: int, out: list[str]) -> int:
    """Append the regex of the `[...]` class at `start` (`^` negates, `\\` escapes, `a-z` ranges);
    return the index of its closing `]`."""
    i = start + 1
    parts = ["["]
    if pattern.startswith("^", i):
        parts.append("^")
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        if pattern[i] == "\\" and i + 1 < len(pattern):
            i += 1
            parts.append(re.escape(pattern[i]))
        else:
            parts.append("-" if pattern[i] == "-" else re.escape(pattern[i]))
        i += 1
    if i >= len(pattern):
        raise PackageError(f".dockerignore: unclosed '[' in {pattern!r}")
    out.append("".join(parts) + "]")
    return i


@dataclass(frozen=True)
class _Entry:
    name: str  # slash-separated, relative to the package root
    path: Path | None  # the file to read (the link target for a symlink); None for a folder
    size: int
    executable: bool


def pack_package(directory: Path, *, limit: int = DEFAULT_LIMIT) -> PackedPackage:
    """Pack the Cog package in `directory` into a deterministic gzip'd tar archive.

    Raises `PackageError` when there is no `cog.yaml`, a symlink points outside the package or
    nowhere, a path is neither a file nor a folder, or the files add up to more than `limit` bytes.
    """
    root = Path(directory)
    if not root.is_dir():
        raise PackageError(f"{root} is not a folder")
    if not (root / "cog.yaml").is_file():
        raise PackageError(f"{root} has no cog.yaml: a Cog package needs one")
    real_root = root.resolve()
    ignore = DockerIgnore.read(root)
    entries = sorted(
        _walk(root, real_root, "", ignore, {real_root}), key=lambda e: e.name.split("/")
    )
    size = sum(e.size for e in entries)
    if size > limit:
        raise PackageError(
            f"the package holds {_mb(size)} of files, more than the limit of {_mb(limit)}"
            " (leave large files out with .dockerignore and download them in setup())"
        )
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for entry in entries:
            _add(tar, entry)
    data = buffer.getvalue()
    files = sum(1 for e in entries if e.path is not None)
    return PackedPackage(data, hashlib.sha256(data).hexdigest(), files, size)


def _walk(
    folder: Path, real_root: Path, prefix: str, ignore: DockerIgnore, seen: set[Path]
) -> Iterator[_Entry]:
    with os.scandir(folder) as scan:
        children = sorted(scan, key=lambda c: c.name)
    for child in children:
        name = f"{prefix}{child.name}"
        path = Path(child.path)
        is_link = child.is_symlink()
        target = path.resolve() if is_link else path
        if is_link and not target.exists():
            raise PackageError(
                f"symlink {name} points to {os.readlink(path)}, which does not exist"
            )
        if is_link and not target.is_relative_to(real_root):
            raise PackageError(f"symlink {name} points outside the package ({os.readlink(path)})")
        info = target.stat()
        if stat.S_ISDIR(info.st_mode):
            if child.name in ALWAYS_EXCLUDED_DIRS:
                continue
            excluded = ignore.excludes(name)
            if excluded and not ignore.has_negations:
                continue  # nothing below can be brought back
            real = target.resolve()
            if real in seen:
                raise PackageError(f"symlink loop at {name}")
            if not excluded:
                yield _Entry(name, None, 0, True)
            yield from _walk(target, real_root, f"{name}/", ignore, seen | {real})
        elif stat.S_ISREG(info.st_mode):
            if name != "cog.yaml" and (
                child.name.endswith(ALWAYS_EXCLUDED_SUFFIXES) or ignore.excludes(name)
            ):
                continue  # cog.yaml is the package's descriptor: always kept
            yield _Entry(name, target, info.st_size, bool(info.st_mode & stat.S_IXUSR))
        else:
            raise PackageError(f"{name} is neither a file nor a folder")


def _add(tar: tarfile.TarFile, entry: _Entry) -> None:
    info = tarfile.TarInfo(entry.name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if entry.executable else 0o644
    if entry.path is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        return
    info.size = entry.size
    try:
        with entry.path.open("rb") as stream:
            tar.addfile(info, stream)
    except OSError as exc:
        raise PackageError(f"cannot read {entry.name}: {exc.strerror or exc}") from exc


def unpack_package(
    archive: bytes | Path | str, destination: Path, *, limit: int = DEFAULT_LIMIT
) -> None:
    """Extract a package archive (its bytes, or a path to it) into `destination`.

    An existing `destination` is left as it is. Raises `PackageError` for an archive that is not a
    gzip'd tar, holds an unsafe path (absolute or with `..`), anything but files and folders (links,
    devices), or more than `limit` bytes of files.
    """
    destination = Path(destination)
    if destination.exists():
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        if isinstance(archive, (bytes, bytearray, memoryview)):
            source: io.BufferedIOBase = io.BytesIO(archive)
        else:
            source = open(archive, "rb")  # noqa: SIM115 - closed by the with below
        with source, tarfile.open(fileobj=source, mode="r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member)
            total = sum(m.size for m in members if m.isfile())
            if total > limit:
                raise PackageError(f"the archive holds {_mb(total)}, more than {_mb(limit)}")
            tar.extractall(scratch, members=members, filter="data")
        os.chmod(scratch, 0o755)
        try:
            os.rename(scratch, destination)
        except OSError:
            if not destination.exists():
                raise
            return  # another unpack got there first; the finally removes our copy
    except tarfile.FilterError as exc:
        raise PackageError(f"unsafe archive: {exc}") from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise PackageError(f"not a package archive (a gzip'd tar): {exc}") from exc
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def _check_member(member: tarfile.TarInfo) -> None:
    """Only files and folders at relative paths that stay inside; the `data` filter checks again."""
    parts = member.name.split("/")
    if member.name.startswith("/") or ".." in parts:
        raise PackageError(f"unsafe archive: {member.name!r} leaves the destination")
    if not (member.isfile() or member.isdir()):
        raise PackageError(f"unsafe archive: {member.name!r} is neither a file nor a folder")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
