"""A file's `metadata` sent as multipart bracket fields, as the v2 Python client (Stainless)
sends a dict: `metadata[key]=value`, `metadata[a][b]=value` for a nested object and
`metadata[tags][]=value` once per item of a list (a list of objects: `metadata[list][][key]`).

Multipart carries text only, so every value arrives as a string (`{"n": 1}` is stored as
`{"n": "1"}`; None is not sent at all); the nesting is rebuilt as Rack and PHP rebuild it.
"""

from __future__ import annotations

import re
from typing import Any

BRACKETED = "metadata["
_SEGMENT = re.compile(r"\[([^\[\]]*)\]")

# (kind, field, description) of an `invalid_fields` entry
Problem = tuple[str, str, str]


def bracket_metadata(
    fields: list[tuple[str, bytearray]], limit: int, size: int = 0
) -> tuple[dict[str, Any], Problem | None]:
    """The object the fields describe, in the order sent, or a problem; `limit` caps the bytes
    of names and values together (as it caps the JSON form's text), `size` is their size
    when the caller counted more than it kept."""
    if max(size, sum(len(name.encode()) + len(value) for name, value in fields)) > limit:
        return {}, ("max_length", "metadata", f"must be at most {limit >> 10} KiB")
    root: dict[str, Any] = {}
    for name, raw in fields:
        path = _path(name)
        if path is None:
            return {}, ("name", name, "is not a field name such as metadata[key] or metadata[a][b]")
        try:
            value = raw.decode()
        except UnicodeDecodeError:
            return {}, ("encoding", name, "must be UTF-8")
        if not _put(root, path, value):
            return {}, ("conflict", name, "gives a key both a value and nested fields")
    return root, None


def _path(name: str) -> list[str] | None:
    """`metadata[a][][b]` -> ["a", "", "b"]; None unless the name is all brackets after
    `metadata` and the first holds a key (the metadata is an object, not a list)."""
    rest = name[len("metadata") :]
    segments = _SEGMENT.findall(rest)
    if not segments or "".join(f"[{s}]" for s in segments) != rest or segments[0] == "":
        return None
    return segments


def _put(container: dict[str, Any], path: list[str], value: str) -> bool:
    """Put `value` at `path` under `container`; False when the path contradicts what is
    there (a string where an object or a list is needed, or the reverse)."""
    key, rest = path[0], path[1:]
    if not rest:
        if key in container:
            return False
        container[key] = value
        return True
    if rest[0] == "":  # a list: `key[]` appends, `key[][sub]` fills the last object or a new one
        items = container.setdefault(key, [])
        if not isinstance(items, list):
            return False
        if len(rest) == 1:
            items.append(value)
            return True
        last = items[-1] if items else None
        if not isinstance(last, dict) or rest[1] in last:
            last = {}
            items.append(last)
        return _put(last, rest[1:], value)
    child = container.setdefault(key, {})
    return isinstance(child, dict) and _put(child, rest, value)
