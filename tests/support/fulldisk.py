"""A real, small disk that tests can fill: a tmpfs mounted on a folder of the test's own.

Mounting needs root (CAP_SYS_ADMIN), which CI has (it runs as root); elsewhere the tests that
need it are skipped, saying why. Nothing is simulated: SQLite, the blob store and the server
hit the kernel's own ENOSPC on it.

`fill` leaves no byte free: a SQLite database there is checkpointed first (`PRAGMA
wal_checkpoint(TRUNCATE)`), because its write-ahead log reuses the room it already has and would
otherwise take a few commits on a "full" disk.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

FILLER = ".filler"


@contextmanager
def small_disk(folder: Path, size: str = "64m") -> Iterator[Path]:
    """`folder` as a tmpfs of `size` for the block; skips the test when it cannot be mounted."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"a small disk needs `mount -t tmpfs` (root): {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def fill(folder: Path, databases: tuple[Path, ...] = ()) -> None:
    """Take every free byte of the disk under `folder` (the `databases` on it checkpointed
    first, so their next commit needs new room)."""
    for database in databases:
        with sqlite3.connect(database, timeout=30) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    block = b"\0" * (1 << 20)
    with open(folder / FILLER, "ab", buffering=0) as out:
        for size in (len(block), 4096, 1):
            with suppress(OSError):
                while True:
                    out.write(block[:size])
    with suppress(OSError), open(folder / (FILLER + "-inodes"), "w"):
        pass  # one more inode, if any is left (tmpfs counts them too)
    assert free_bytes(folder) == 0, free_bytes(folder)


def free(folder: Path) -> None:
    """Give the room back."""
    for name in (FILLER, FILLER + "-inodes"):
        (folder / name).unlink(missing_ok=True)


def free_bytes(folder: Path) -> int:
    stat = os.statvfs(folder)
    return stat.f_bavail * stat.f_frsize


def is_enospc(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno == errno.ENOSPC
