"""Limits on what a request may carry, checked before a route sees it (docs/api.md, "Limits").

`BodyLimits` is ASGI middleware: a request body larger than `MAX_BODY` answers 413, and a JSON
body nested deeper than `MAX_DEPTH` or holding a string that is not valid Unicode (a lone
surrogate such as `"\\ud800"`, which JSON escapes allow but UTF-8 cannot encode) answers 422
naming the field. Such a string would be stored, then fail every answer that renders it, so
it must never reach a route. The two upload routes that stream their bodies to disk (`POST
/v1/files`, the package push) enforce limits of their own and are left alone here.

The helpers (`json_problem`, `text_problem`) serve the routes that take JSON or text by other
means: file metadata in a multipart form, the search query, model texts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import parse_qsl

from pydantic import AfterValidator, StrictStr
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import Problem, invalid_fields_problem, problem_response

MAX_BODY = 16 << 20  # a JSON body: fits a 10 MB file as a data: URI (base64 adds a third)
MAX_DEPTH = 64  # arrays and objects inside one another
DRAIN_LIMIT = 16 << 20  # read this much of a refused body so the client sees the 413

# Model texts (characters): Replicate documents none, these fit every model card we know of.
DESCRIPTION_MAX = 5_000
README_MAX = 256 << 10
URL_MAX = 500  # the columns' width
WEBHOOK_MAX = 2_000  # the column's width
METADATA_MAX = 64 << 10  # a file's metadata, as JSON text (bytes)
QUERY_MAX = 1_000  # search queries


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("must not hold a NUL character")
    return text


#: A body field the database compares or stores as text: PostgreSQL cannot hold a NUL in one.
#: (Lone surrogates never get this far: `BodyLimits` refuses them in every JSON body.)
Text = Annotated[str, AfterValidator(_no_nul)]
StrictText = Annotated[StrictStr, AfterValidator(_no_nul)]


def is_unicode(text: str) -> bool:
    """Whether `text` can be encoded as UTF-8 (no lone surrogates)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _field(kind: str, field: str, description: str) -> dict[str, str]:
    return {"type": kind, "field": field or "body", "description": description}


def value_problem(value: Any, field: str) -> dict[str, str] | None:
    """The first problem of a parsed JSON value (too deep, or a string that is not Unicode),
    as an `invalid_fields` entry naming where it is (`input.text`, `metadata.a.0`), or None."""
    stack: list[tuple[Any, str, int]] = [(value, field, 0)]
    while stack:
        item, where, depth = stack.pop()
        if isinstance(item, str):
            if not is_unicode(item):
                return _field("unicode", where, "must be valid Unicode text (no lone surrogates)")
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= MAX_DEPTH:
            return _field("depth", where, f"is nested more than {MAX_DEPTH} levels deep")
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        for key, child in pairs:
            name = str(key)
            if isinstance(key, str) and not is_unicode(key):
                return _field("unicode", where, "has a key that is not valid Unicode text")
            stack.append((child, f"{where}.{name}" if where else name, depth + 1))
    return None


def parse_json(text: str | bytes, field: str) -> tuple[Any, dict[str, str] | None]:
    """`text` parsed, with the problem of `value_problem`; a value nested so deep that the
    parser itself gives up is reported the same way. Raises ValueError for invalid JSON."""
    try:
        value = json.loads(text)
    except RecursionError:
        return None, _field("depth", field, f"is nested more than {MAX_DEPTH} levels deep")
    return value, value_problem(value, field)


def text_problem(field: str, value: str | None, limit: int) -> dict[str, str] | None:
    """A text field (a description, a URL, a name) that is not valid Unicode, holds a NUL
    (PostgreSQL cannot store one) or is longer than `limit` characters."""
    if value is None:
        return None
    if not is_unicode(value) or "\x00" in value:
        return _field("unicode", field, "must be valid Unicode text without NUL characters")
    if len(value) > limit:
        return _field("max_length", field, f"must be at most {limit:,} characters")
    return None


def parse_count(text: str, digits: int) -> int | None:
    """`text` as a non-negative integer of at most `digits` ASCII digits, or None (`isdigit()`
    also accepts "²", which int() refuses, and int() of thousands of digits is refused too)."""
    if not (0 < len(text) <= digits and text.isascii() and text.isdigit()):
        return None
    return int(text)


def url_problem(scope: Scope) -> Problem | None:
    """A NUL in the path or a query parameter: PostgreSQL cannot compare text holding one, so
    it would fail the query instead of matching nothing. (Starlette decodes invalid UTF-8 in
    URLs as U+FFFD, so no lone surrogate comes from there.)"""
    if "\x00" in scope.get("path", ""):
        return Problem(400, "The URL path holds a NUL character.", title="Bad request")
    query = scope.get("query_string", b"")
    if b"%00" not in query and b"\x00" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            field = _field("unicode", f"query.{name.replace(chr(0), '')}", "holds a NUL character")
            return invalid_fields_problem([field], "Invalid request")
    return None


def too_large(limit: int) -> Problem:
    return Problem(
        413, f"The request body is larger than {limit >> 20} MiB.", title="Content too large"
    )


def _is_json(headers: Headers) -> bool:
    """As FastAPI decides to parse a body as JSON: application/json or application/*+json."""
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class BodyLimits:
    """Refuses a NUL in the URL (`url_problem`), then reads each request body (up to
    `MAX_BODY`) before the app does, refuses what is too large or, for JSON, too deep or not
    Unicode, and hands the rest on unchanged."""

    def __init__(self, app: ASGIApp, streamed: Callable[[Scope], bool]) -> None:
        self.app = app
        self.streamed = streamed  # routes that read and limit their own bodies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        problem = url_problem(scope)
        if problem is not None:
            await problem_response(problem)(scope, receive, send)
            return
        if self.streamed(scope):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        body = bytearray()
        received, more = 0, declared != "0"
        size = parse_count(declared, 20)
        refused = size is not None and size > MAX_BODY
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # nobody is left to answer
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            received += len(chunk)
            if refused:  # drained, not kept
                if received > DRAIN_LIMIT:
                    break
                continue
            body += chunk
            if received > MAX_BODY:
                refused, received, body = True, 0, bytearray()
        if refused:
            await problem_response(too_large(MAX_BODY))(scope, receive, send)
            return
        if body and _is_json(headers):
            problem = _json_body_problem(bytes(body))
            if problem is not None:
                await problem_response(problem)(scope, receive, send)
                return
        await self.app(scope, _replay(bytes(body), receive), send)


# What could hold a surrogate: an escape of one, one encoded in UTF-8 bytes (`json.loads` of
# bytes lets those through), or a NUL (a UTF-16 or UTF-32 body).
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]|\x00")


def _json_body_problem(body: bytes) -> Problem | None:
    # The route parses the body again: parse it here only when it could hold a problem (a
    # lone surrogate needs `_MAYBE_SURROGATE`; nesting deeper than `MAX_DEPTH` needs more than
    # `MAX_DEPTH` brackets). Most bodies have neither, and are parsed once, by the route.
    if body.count(b"[") + body.count(b"{") <= MAX_DEPTH and not _MAYBE_SURROGATE.search(body):
        return None
    try:
        _, problem = parse_json(body, "")
    except ValueError:
        return None  # not JSON: the route answers that in its own words
    if problem is None:
        return None
    return invalid_fields_problem([problem], "Invalid request")


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # after the body: a disconnect, when the client goes

    return replay
