"""Cursor pagination: `{next, previous, results}` with absolute `next` URLs (JS requires them)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from .errors import Problem

T = TypeVar("T")
CURSOR_MAX = 400  # characters: ours hold a timestamp and an id
Cursor = tuple[datetime, str]


def encode_cursor(created_at: datetime, key: str) -> str:
    return base64.urlsafe_b64encode(f"{created_at.isoformat()}|{key}".encode()).decode()


def decode_cursor(cursor: str | None) -> Cursor | None:
    if not cursor:
        return None
    try:
        if len(cursor) > CURSOR_MAX:
            raise ValueError("too long")
        at, _, key = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        if "\x00" in key:
            raise ValueError("a NUL")  # PostgreSQL could not compare it
        return datetime.fromisoformat(at), key
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise Problem(400, "The cursor is not valid; use the `next` URL of a page.") from None


def page(
    rows: Sequence[T],
    limit: int,
    base_url: str,
    params: dict[str, Any],
    key: Callable[[T], Cursor],
    render: Callable[[T], Any],
) -> dict[str, Any]:
    """`rows` holds up to limit + 1 items; the extra one only says there is a next page."""
    has_more = len(rows) > limit
    rows = rows[:limit]
    next_url = None
    if has_more:
        at, last = key(rows[-1])
        query = {k: v for k, v in params.items() if v is not None}
        query["cursor"] = encode_cursor(at, last)
        next_url = f"{base_url}?{urlencode(query)}"
    return {"next": next_url, "previous": None, "results": [render(row) for row in rows]}
