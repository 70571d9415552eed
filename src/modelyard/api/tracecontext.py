"""W3C Trace Context (`traceparent`, `tracestate`) taken from a create request, as Cog takes it.

Cog reads both headers from `POST /predictions` and sends them on every webhook of that
prediction (and, with tracing on, carries them into its worker). Modelyard does the same: the
context is stored with the prediction (`predictions.trace_context`), sent as headers on each
webhook POST and handed to the worker in the prediction's request `context`.

A header that is not a valid `traceparent` is ignored, as the W3C recommendation says: no new
trace is invented in its place, and the request never fails because of it (a tracing header must
not decide whether a prediction runs). A `tracestate` is kept only with a valid `traceparent`
and only when it is well formed (https://www.w3.org/TR/trace-context/#tracestate-header).
"""

from __future__ import annotations

import re

from starlette.datastructures import Headers

# version "-" trace-id "-" parent-id "-" trace-flags, lowercase hex (uppercase is invalid).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16
# A list-member: key "=" value; the key is lowercase (with an optional tenant "@" system).
_MEMBER = re.compile(
    r"[a-z0-9][a-z0-9_\-*/]{0,255}(@[a-z][a-z0-9_\-*/]{0,13})?=[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
)
TRACESTATE_MAX = 512  # characters a platform must propagate at least; longer ones are dropped
TRACESTATE_MEMBERS = 32  # list-members allowed by the recommendation


def parse_traceparent(value: str | None) -> str | None:
    """The header when it is a valid traceparent, else None.

    Version 00 is exactly 55 characters. A later version may add fields after a `-` (parsed as
    version 00, per the recommendation); version ff is invalid."""
    if value is None:
        return None
    value = value.strip(" \t")
    match = _TRACEPARENT.match(value)
    if match is None:
        return None
    version, trace_id, parent_id, _flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    if len(value) > 55 and (version == "00" or value[55] != "-"):
        return None
    return value


def parse_tracestate(value: str | None) -> str | None:
    """The header when it is a well-formed tracestate within the limits, else None."""
    if value is None:
        return None
    value = value.strip(" \t")
    if not value or len(value) > TRACESTATE_MAX:
        return None
    members = [m.strip(" \t") for m in value.split(",")]
    members = [m for m in members if m]  # empty list-members are allowed and ignored
    if not members or len(members) > TRACESTATE_MEMBERS:
        return None
    if not all(_MEMBER.fullmatch(m) for m in members):
        return None
    keys = [m.split("=", 1)[0] for m in members]
    if len(set(keys)) != len(keys):  # a key appears at most once
        return None
    return ",".join(members)


def trace_context(headers: Headers) -> dict[str, str] | None:
    """`{"traceparent": ..., "tracestate": ...?}` from a request's headers, or None."""
    # Several traceparent headers cannot be combined: the request carries no valid one.
    parents = headers.getlist("traceparent")
    traceparent = parse_traceparent(parents[0]) if len(parents) == 1 else None
    if traceparent is None:
        return None
    context = {"traceparent": traceparent}
    # Several tracestate headers are one list, joined by commas (RFC 9110 field lines).
    states = headers.getlist("tracestate")
    tracestate = parse_tracestate(",".join(states)) if states else None
    if tracestate is not None:
        context["tracestate"] = tracestate
    return context
