"""The wire protocol between the runner (parent) and the worker (child).

Frames are a 4-byte big-endian length followed by a UTF-8 JSON object whose `t` key names the
message; a frame's body is at most `MAX_FRAME` bytes, checked by whoever encodes it and again by
whoever reads it (before the body is read). Both sides import this module, so it uses the standard
library only, and what runs on the worker side runs on the model's Python (3.10 or newer).

Two socket pairs: the data socket carries `PredictMessage` to the worker and everything the worker
sends (`WorkerMessage`); the control socket carries `CancelMessage`, `HealthRequest` and
`ShutdownMessage` to it, so they reach a worker that is busy predicting. The `TypedDict`s below
are the one definition of every message both sides use; `t` tells them apart (and narrows the
unions for a type checker).

File outputs travel as `{FILE_KEY: "/absolute/path"}` objects inside output values; the parent
turns them into its own file handles.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any, BinaryIO, Literal, TypedDict

HEADER = struct.Struct(">I")
FILE_KEY = "__modelyard_file__"
WORKER_FD_ENV = "MODELYARD_WORKER_FD"  # "<data fd>,<control fd>"
WORKER_CONFIG_ENV = "MODELYARD_WORKER_CONFIG"

MiB = 1024 * 1024
#: The largest frame body either side sends or accepts. Outputs bigger than this belong in files
#: (which travel as paths), not in JSON; a bigger header means a bug or a corrupted stream, and
#: is refused before anything is allocated for it.
MAX_FRAME = 64 * MiB
#: The worker's exit status when it reads a frame it cannot accept (the stream is then unusable).
EXIT_PROTOCOL_ERROR = 86

Mode = Literal["predict", "train"]
Status = Literal["succeeded", "failed", "canceled"]
LogSource = Literal["stdout", "stderr"]
MetricMode = Literal["replace", "incr", "append"]


class _WorkerConfigRequired(TypedDict):
    ref: str
    mode: Mode
    weights: str | None
    max_concurrency: int | None


class WorkerConfig(_WorkerConfigRequired, total=False):
    """What the runner tells the worker at start, as JSON in `WORKER_CONFIG_ENV`.

    `preload`: modules to import before the predictor (what its last setup() imported);
    `warm`: a template (runtime/templates.py): after the imports, send `WarmMessage` and wait
    for `SetupRequest` on the control socket before running setup()."""

    preload: list[str]
    warm: bool


# --- runner to worker ---------------------------------------------------------------------


class PredictMessage(TypedDict):
    """Data socket: run one prediction (`input` is validated JSON, file inputs local paths)."""

    t: Literal["predict"]
    id: str
    input: dict[str, Any]
    context: dict[str, str]


class CancelMessage(TypedDict):
    """Control socket: cancel a prediction (it may not have reached the worker yet)."""

    t: Literal["cancel"]
    id: str


class HealthRequest(TypedDict):
    """Control socket: run the user's `healthcheck()`; answered by a `HealthReply`."""

    t: Literal["health"]
    id: int


class ShutdownMessage(TypedDict):
    """Control socket: take no more predictions and exit when the running ones end."""

    t: Literal["shutdown"]


class SetupRequest(TypedDict):
    """Control socket, to a template only (a worker started `warm`): run setup() now."""

    t: Literal["setup"]


ControlMessage = CancelMessage | HealthRequest | ShutdownMessage | SetupRequest
ParentMessage = PredictMessage | CancelMessage | HealthRequest | ShutdownMessage | SetupRequest


# --- worker to runner ---------------------------------------------------------------------


class ReadyMessage(TypedDict):
    """`setup()` succeeded: the worker takes up to `slots` predictions at once.

    The boot's phases in seconds (`import_time`: the preloaded modules and the predictor's
    module; `setup_time`: setup()), and `modules`: the top-level modules from outside the
    package that loading and setup() imported (what a template of this version preloads)."""

    t: Literal["ready"]
    slots: int
    is_async: bool
    import_time: float
    setup_time: float
    modules: list[str]
    environ: dict[str, str | None]  # what loading and setup() changed (boot.changes)


class WarmMessage(TypedDict):
    """A template imported the model's modules (in `import_time` seconds) and waits."""

    t: Literal["warm"]
    import_time: float
    environ: dict[str, str | None]  # what its imports changed (boot.changes)


class SetupFailedMessage(TypedDict):
    """`setup()` (or loading the predictor) failed; the worker exits."""

    t: Literal["setup_failed"]
    error: str


class LogMessage(TypedDict):
    """A line (or lines) of output; `id` is None for the worker's own output (setup, or
    output between predictions or of several at once that cannot be told apart)."""

    t: Literal["log"]
    id: str | None
    source: LogSource
    text: str


class OutputMessage(TypedDict):
    """One item yielded by an iterator output."""

    t: Literal["output"]
    id: str
    index: int
    value: Any


class MetricMessage(TypedDict):
    """A metric recorded by the prediction (`value` None deletes it)."""

    t: Literal["metric"]
    id: str
    name: str
    value: Any
    mode: MetricMode


class _DoneRequired(TypedDict):
    t: Literal["done"]
    id: str
    status: Status
    output: Any  # None for a stream: its items came as OutputMessages
    metrics: dict[str, Any]  # nested by the dots in their names
    predict_time: float


class DoneMessage(_DoneRequired, total=False):
    """The prediction ended; the last message for its id."""

    error: str
    is_stream: bool


class HealthReply(TypedDict):
    """The answer to `HealthRequest` with the same `id`."""

    t: Literal["health"]
    id: int
    ok: bool
    error: str | None


WorkerMessage = (
    ReadyMessage
    | WarmMessage
    | SetupFailedMessage
    | LogMessage
    | OutputMessage
    | MetricMessage
    | DoneMessage
    | HealthReply
)


# --- frames -------------------------------------------------------------------------------


class ProtocolError(ValueError):
    """A frame that cannot be sent or accepted."""


class FrameTooLarge(ProtocolError):
    """A frame body over `MAX_FRAME` bytes: refused by the sender, or by the reader before it
    reads the body."""

    def __init__(self, size: int, limit: int, sender: str | None = None) -> None:
        self.size = size
        self.limit = limit
        self.sender = sender
        shown, limit_shown = describe_size(size), describe_size(limit)
        if shown == limit_shown:  # just over: rounded, both would read "64 MiB"
            shown, limit_shown = f"{size} bytes", f"{limit} bytes"
        if sender is None:
            text = f"the message would be {shown}; the limit is {limit_shown}"
        else:
            text = f"{sender} sent a {shown} message; the limit is {limit_shown}"
        super().__init__(text)


def describe_size(size: int) -> str:
    """`512 bytes`, `1.5 KiB`, `64 MiB`: a byte count for an error message."""
    if size < 1024:
        return f"{size} bytes"
    for unit, scale in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f}".rstrip("0").rstrip(".") + f" {unit}"
    raise AssertionError("unreachable")


# NaN and Infinity are not JSON: an output holding them fails instead of reaching clients that
# cannot parse it.
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_loads = json.loads


def encode(message: Mapping[str, Any]) -> bytes:
    """One frame for `message`; `FrameTooLarge` (a ValueError, as for values that are not JSON)
    when its body would be over `MAX_FRAME` bytes."""
    body = _dumps(message).encode("utf-8")
    if len(body) > MAX_FRAME:
        raise FrameTooLarge(len(body), MAX_FRAME)
    return HEADER.pack(len(body)) + body


def check_size(size: int, sender: str) -> None:
    """Refuse a frame whose header announces more than `MAX_FRAME` bytes, before reading it."""
    if size > MAX_FRAME:
        raise FrameTooLarge(size, MAX_FRAME, sender)


def decode(body: bytes, sender: str = "the peer") -> dict[str, Any]:
    """The message in a frame body; `ProtocolError` when it is not a JSON object with a `t`."""
    try:
        message = _loads(body)
    except ValueError as exc:  # UnicodeDecodeError included
        raise ProtocolError(f"{sender} sent a message that is not valid JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("t"), str):
        raise ProtocolError(f"{sender} sent a message without a 't' key: {body[:100]!r}")
    return message


def read_message(stream: BinaryIO, sender: str = "the runner") -> dict[str, Any]:
    """Blocking read of one message from a buffered socket file (`sock.makefile("rb")`), which
    usually takes a frame's header and body in one system call; EOFError when the peer has gone,
    `ProtocolError` (`FrameTooLarge`) for a frame that cannot be accepted."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        raise EOFError("peer closed the connection")
    (size,) = HEADER.unpack(header)
    check_size(size, sender)
    body = stream.read(size)
    if len(body) < size:
        raise EOFError("peer closed the connection")
    return decode(body, sender)
