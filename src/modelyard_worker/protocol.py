"""The wire protocol between the runner (parent) and the worker (child).

Frames are a 4-byte big-endian length followed by a UTF-8 JSON object whose `t` key names the
message. Both sides import this module, so it uses the standard library only.

Two socket pairs: the data socket carries `predict {id, input, context}` to the worker and
everything the worker sends; the control socket carries `cancel {id}`, `health {id}` and
`shutdown` to it, so they reach a worker that is busy predicting.
Worker to parent: `ready {slots, is_async}`, `setup_failed {error}`, `log {id, source, text}`,
`output {id, index, value}`, `metric {id, name, value, mode}`,
`done {id, status, output, error, metrics, predict_time, is_stream}`, `health {id, ok, error}`.

File outputs travel as `{FILE_KEY: "/absolute/path"}` objects inside output values; the parent
turns them into its own file handles.
"""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO

HEADER = struct.Struct(">I")
FILE_KEY = "__modelyard_file__"
WORKER_FD_ENV = "MODELYARD_WORKER_FD"  # "<data fd>,<control fd>"
WORKER_CONFIG_ENV = "MODELYARD_WORKER_CONFIG"

# NaN and Infinity are not JSON: an output holding them fails instead of reaching clients that
# cannot parse it.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_loads = json.loads


def encode(message: dict[str, Any]) -> bytes:
    """One frame for `message`."""
    body = _dumps(message).encode("utf-8")
    return HEADER.pack(len(body)) + body


def decode(body: bytes) -> dict[str, Any]:
    return _loads(body)


def read_message(stream: BinaryIO) -> dict[str, Any]:
    """Blocking read of one message from a buffered socket file (`sock.makefile("rb")`), which
    usually takes a frame's header and body in one system call; EOFError when the peer has gone."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        raise EOFError("peer closed the connection")
    (size,) = HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        raise EOFError("peer closed the connection")
    return decode(body)
