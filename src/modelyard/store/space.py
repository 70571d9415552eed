"""Telling a full disk from other failures, wherever it surfaces.

A full disk reaches the code in several shapes: `OSError` with `ENOSPC` (or `EDQUOT`, a quota)
from a file write, SQLite's "database or disk is full" (`SQLITE_FULL`), PostgreSQL's `disk_full`
(SQLSTATE 53100), each perhaps wrapped by SQLAlchemy or raised `from` another exception. The API
answers all of them with 507 and `Retry-After` (api/errors.py), the engine fails a prediction
whose output cannot be stored with `NO_SPACE` (engine/files.py), and nothing retries them in a
tight loop or logs a traceback each time.
"""

from __future__ import annotations

import errno
import sqlite3

NO_SPACE = "no space left on the server's disk"
RETRY_AFTER = 60  # seconds a client is asked to wait: space comes back when someone frees it

_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_SQLITE_FULL = 13  # the primary result code; extended codes keep it in their low byte
_PG_DISK_FULL = "53100"
_SQLITE_MESSAGE = "database or disk is full"


class NoSpaceLeft(OSError):
    """Raised where a full disk stops something that has a clearer name for it than the
    OSError underneath (an output file that cannot be stored). Its message starts with
    `NO_SPACE`."""

    def __init__(self, what: str) -> None:
        super().__init__(errno.ENOSPC, f"{NO_SPACE}: {what}")

    def __str__(self) -> str:
        return str(self.strerror)


def out_of_space(error: BaseException | None) -> bool:
    """Whether `error`, or anything it was raised from or wraps, says the disk is full."""
    seen: set[int] = set()
    pending = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if _says_full(current):
            return True
        pending += [current.__cause__, current.__context__, getattr(current, "orig", None)]
        if isinstance(current, BaseExceptionGroup):
            pending += list(current.exceptions)
    return False


def _says_full(error: BaseException) -> bool:
    if isinstance(error, OSError) and error.errno in _ERRNOS:
        return True
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        return (code is not None and code & 0xFF == _SQLITE_FULL) or _SQLITE_MESSAGE in str(error)
    # psycopg (3) names it `sqlstate`, psycopg2 `pgcode`; neither needs importing to ask
    return _PG_DISK_FULL in (getattr(error, "sqlstate", None), getattr(error, "pgcode", None))
