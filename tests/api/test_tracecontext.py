"""The W3C trace context parser of create requests (api/tracecontext.py): what is kept, what is
ignored, per https://www.w3.org/TR/trace-context/."""

from __future__ import annotations

import pytest
from starlette.datastructures import Headers

from modelyard.api.tracecontext import parse_traceparent, parse_tracestate, trace_context

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    "value",
    [
        VALID,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",  # not sampled
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later-fields",  # a later version
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
    ],
)
def test_valid_traceparents_are_kept_as_sent(value: str) -> None:
    assert parse_traceparent(value) == value
    assert parse_traceparent(f" {value}\t") == value  # optional whitespace around a field


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        VALID.upper(),
        VALID[:-1],
        VALID + "-",  # version 00 is exactly 55 characters
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",  # no `-` after the flags
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ],
)
def test_invalid_traceparents_are_ignored(value: str | None) -> None:
    assert parse_traceparent(value) is None


def test_tracestate_lists() -> None:
    assert parse_tracestate("congo=t61rcWkgMzE") == "congo=t61rcWkgMzE"
    assert parse_tracestate("rojo=1 ,, congo=2") == "rojo=1,congo=2"  # empty members dropped
    assert parse_tracestate("fw529a3039@dt=00f067aa") == "fw529a3039@dt=00f067aa"  # tenant@system
    assert parse_tracestate("a=1,a=2") is None  # a key appears once
    assert parse_tracestate("Upper=1") is None
    assert parse_tracestate("novalue") is None
    assert parse_tracestate(",".join(f"k{i}=v" for i in range(33))) is None  # 32 members at most
    assert parse_tracestate("k=" + "v" * 600) is None  # over 512 characters
    assert parse_tracestate("") is None


def test_trace_context_from_headers() -> None:
    both = Headers(raw=[(b"traceparent", VALID.encode()), (b"tracestate", b"a=1"),
                        (b"tracestate", b"b=2")])  # fmt: skip
    assert trace_context(both) == {"traceparent": VALID, "tracestate": "a=1,b=2"}
    assert trace_context(Headers({"traceparent": VALID})) == {"traceparent": VALID}
    # A tracestate alone means nothing; two traceparents cannot be chosen between.
    assert trace_context(Headers({"tracestate": "a=1"})) is None
    two = Headers(raw=[(b"traceparent", VALID.encode()), (b"traceparent", VALID.encode())])
    assert trace_context(two) is None
