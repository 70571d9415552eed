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

`pack_to(folder, stream)` writes the same archive to a file as it is made (what `modelyard push`
uploads, so a big package is never held in memory); `pack_package` keeps it in memory.

`unpack_package(archive, destination, limits=...)` reads an archive someone else made, so it first
walks the tar headers (decompressing as it goes, extracting nothing) and refuses it as soon as one
of `PackageLimits` is passed: entries, bytes of files, bytes of files per byte of archive (a tar
bomb). It accepts only regular files and folders at relative paths without `..`, with bounded
names and header records (a pax header of a gigabyte would otherwise be read into memory). Only
then does it extract, with tarfile's `data` filter (a second guard against paths leaving the
folder), into a temporary sibling folder renamed into place: an existing destination is left as it
is, concurrent unpacks of the same archive are safe, and a refused archive leaves nothing.

See docs/push.md for the archive format and the push endpoint.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO

from modelyard.cogspec.errors import one_line

from .dockerignore import DockerIgnore, PatternError

DEFAULT_LIMIT = 2 * 1024**3  # bytes of file content a package may hold
ALWAYS_EXCLUDED_DIRS = frozenset({".git", "__pycache__", ".cog", ".venv"})
ALWAYS_EXCLUDED_SUFFIXES = (".pyc",)
_CHUNK = 1024 * 1024
# A pax or GNU long-name record is read whole into memory by tarfile: a path and a few attributes
# need a few kB. Linux refuses longer paths and names anyway.
_MAX_HEADER_RECORD = 64 * 1024
_MAX_PATH = 4096
_MAX_NAME = 255


class PackageError(ValueError):
    """A package that cannot be packed or an archive that cannot be unpacked; `str()` is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))  # it may quote names the archive's author chose


class PackageTooLarge(PackageError):
    """An archive past one of its `PackageLimits` (answered 413 by the server)."""


@dataclass(frozen=True)
class PackageLimits:
    """What an archive may expand to, checked from its headers before anything is extracted.

    `max_ratio` is the most bytes of files per byte of archive once the files pass `ratio_floor`
    bytes (0: no check): code and weights compress 1 to 10 times, a tar bomb a thousand times.
    """

    max_bytes: int = DEFAULT_LIMIT
    max_entries: int = 20_000
    max_ratio: int = 100
    ratio_floor: int = 64 * 1024 * 1024


DEFAULT_LIMITS = PackageLimits()


@dataclass(frozen=True)
class Packed:
    """What `pack_to` wrote: the hex sha256 of the archive's bytes, their number, the number of
    files and their total size in bytes (before compression)."""

    sha256: str
    archive_size: int
    files: int
    size: int


@dataclass(frozen=True)
class PackedPackage:
    """A packed package held in memory: the archive's bytes, the hex sha256 of those bytes, the
    number of files and their total size in bytes (before compression)."""

    data: bytes
    sha256: str
    files: int
    size: int


@dataclass(frozen=True)
class _Entry:
    name: str  # slash-separated, relative to the package root
    path: Path | None  # the file to read (the link target for a symlink); None for a folder
    size: int
    executable: bool


def pack_package(directory: Path, *, limit: int = DEFAULT_LIMIT) -> PackedPackage:
    """Pack the Cog package in `directory` into a deterministic gzip'd tar archive, in memory
    (for small packages; `pack_to` writes a big one to a file as it goes)."""
    buffer = io.BytesIO()
    packed = pack_to(directory, buffer, limit=limit)
    return PackedPackage(buffer.getvalue(), packed.sha256, packed.files, packed.size)


def pack_to(directory: Path, stream: BinaryIO, *, limit: int = DEFAULT_LIMIT) -> Packed:
    """Write the deterministic gzip'd tar archive of the Cog package in `directory` to `stream`,
    hashing it on the way (never more than a chunk in memory).

    Raises `PackageError` when there is no `cog.yaml`, a symlink points outside the package or
    nowhere, a path is neither a file nor a folder, or the files add up to more than `limit` bytes.
    """
    root = Path(directory)
    if not root.is_dir():
        raise PackageError(f"{root} is not a folder")
    if not (root / "cog.yaml").is_file():
        raise PackageError(f"{root} has no cog.yaml: a Cog package needs one")
    real_root = root.resolve()
    try:
        ignore = DockerIgnore.read(root)
    except PatternError as exc:
        raise PackageError(str(exc)) from None
    entries = sorted(
        _walk(root, real_root, "", ignore, {real_root}), key=lambda e: e.name.split("/")
    )
    size = sum(e.size for e in entries)
    if size > limit:
        raise PackageError(
            f"the package holds {_mb(size)} of files, more than the limit of {_mb(limit)}"
            " (leave large files out with .dockerignore and download them in setup())"
        )
    out = _Hashing(stream)
    with (
        gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for entry in entries:
            _add(tar, entry)
    files = sum(1 for e in entries if e.path is not None)
    return Packed(out.sha256.hexdigest(), out.size, files, size)


class _Hashing(io.RawIOBase):
    """A write-only stream that hashes and counts what goes through it to `stream`."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.sha256 = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.sha256.update(data)
        self.size += len(data)
        self.stream.write(data)
        return len(data)


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
    archive: bytes | Path | str,
    destination: Path,
    *,
    limits: PackageLimits = DEFAULT_LIMITS,
    limit: int | None = None,
) -> None:
    """Extract a package archive (its bytes, or a path to it) into `destination`.

    An existing `destination` is left as it is. Raises `PackageTooLarge` for an archive past
    `limits` (`limit`, when given, is their `max_bytes`) and `PackageError` for one that is not a
    gzip'd tar, holds an unsafe path (absolute or with `..`), or anything but files and folders
    (links, devices); both before anything is extracted, leaving nothing behind.
    """
    if limit is not None:
        limits = replace(limits, max_bytes=limit)
    destination = Path(destination)
    if destination.exists():
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(archive, (bytes, bytearray, memoryview)):
        source: BinaryIO = io.BytesIO(archive)
        size = len(archive)
    else:
        source = open(archive, "rb")  # noqa: SIM115 - closed by the with below
        size = os.fstat(source.fileno()).st_size
    scratch: Path | None = None
    try:
        with source, tarfile.open(fileobj=source, mode="r:gz", tarinfo=_Header) as tar:
            members = _checked_members(tar, size, limits)
            scratch = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
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
    except RecursionError:  # tarfile follows a chain of pax headers by recursion
        raise PackageError("not a package archive: too many headers in a row") from None
    finally:
        if scratch is not None and scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)


def _checked_members(
    tar: tarfile.TarFile, archive_size: int, limits: PackageLimits
) -> list[tarfile.TarInfo]:
    """The archive's members, read header by header (each file's content is skipped, not
    extracted); the first one past a limit ends the reading with an error."""
    members: list[tarfile.TarInfo] = []
    total = 0
    for member in tar:
        _check_member(member)
        members.append(member)
        if len(members) > limits.max_entries:
            raise PackageTooLarge(
                f"the archive holds more than {limits.max_entries} files and folders"
            )
        total += member.size if member.isreg() else 0
        if total > limits.max_bytes:
            raise PackageTooLarge(
                f"the archive expands to more than {_mb(limits.max_bytes)} of files"
            )
        if limits.max_ratio and total > max(limits.ratio_floor, limits.max_ratio * archive_size):
            raise PackageTooLarge(
                f"the archive expands to more than {limits.max_ratio} times its size "
                f"({_mb(archive_size)} compressed)"
            )
    return members


_RECORD_TYPES = (
    tarfile.GNUTYPE_LONGNAME,
    tarfile.GNUTYPE_LONGLINK,
    tarfile.XHDTYPE,
    tarfile.XGLTYPE,
    tarfile.SOLARIS_XHDTYPE,
)


class _Header(tarfile.TarInfo):
    """A TarInfo that refuses a long-name or pax record too big to hold in memory before
    tarfile reads it (tarfile reads such a record whole)."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _RECORD_TYPES and self.size > _MAX_HEADER_RECORD:
            raise PackageError(
                f"unsafe archive: a header record of {self.size} bytes (at most "
                f"{_MAX_HEADER_RECORD})"
            )
        return super()._proc_member(tarfile_)  # type: ignore[misc]


def _check_member(member: tarfile.TarInfo) -> None:
    """Only regular files and folders at relative paths that stay inside, with names the
    filesystem takes; the `data` filter checks the paths again."""
    name = member.name
    shown = one_line(repr(name), 100)
    parts = name.split("/")
    if name.startswith("/") or ".." in parts:
        raise PackageError(f"unsafe archive: {shown} leaves the destination")
    regular = member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and member.sparse is None
    if not (regular or member.type == tarfile.DIRTYPE):
        raise PackageError(f"unsafe archive: {shown} is neither a file nor a folder")
    if (
        "\0" in name
        or len(os.fsencode(name)) > _MAX_PATH
        or any(len(os.fsencode(part)) > _MAX_NAME for part in parts)
    ):
        raise PackageError(f"unsafe archive: {shown} is not a valid path")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
