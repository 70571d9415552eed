"""The worker protocol: one TypedDict per message kind, frames that round-trip, a frame size cap.

The TypedDicts are checked against what a real worker sends (and what the runner sends it),
captured from runners on the fixtures of tests/fixtures/.
"""

from __future__ import annotations

import asyncio
import io
import re
import socket
import types
import typing
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fixture_support import PREDICTION_LIMIT, inputs, predict

from modelyard.runtime.connection import Connection
from modelyard.runtime.events import Done, Event, Log, Started
from modelyard.runtime.runner import Health, Runner, RunnerState, describe_exit
from modelyard_worker import protocol, scope, worker

session_loop = pytest.mark.asyncio(loop_scope="session")  # the loop of the shared fixtures

MiB = protocol.MiB


def kinds(union: Any) -> dict[str, type]:
    """`t` value -> TypedDict, for the members of a union of messages."""
    table: dict[str, type] = {}
    for member in typing.get_args(union):
        (kind,) = typing.get_args(typing.get_type_hints(member)["t"])
        assert kind not in table, f"two messages are {kind!r}"
        table[kind] = member
    return table


PARENT_KINDS = kinds(protocol.ParentMessage)
WORKER_KINDS = kinds(protocol.WorkerMessage)


def conforms(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a type hint of the protocol's TypedDicts."""
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(conforms(value, arg) for arg in typing.get_args(hint))
    if origin is dict:
        key, item = typing.get_args(hint)
        return isinstance(value, dict) and all(
            conforms(k, key) and conforms(v, item) for k, v in value.items()
        )
    if origin is list:
        (item,) = typing.get_args(hint)
        return isinstance(value, list) and all(conforms(v, item) for v in value)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_message(message: dict[str, Any], table: dict[str, type]) -> type:
    """Assert `message` is exactly its kind's TypedDict (keys and value types) and round-trips."""
    cls = table[message["t"]]
    required: frozenset[str] = cls.__required_keys__  # type: ignore[attr-defined]
    optional: frozenset[str] = cls.__optional_keys__  # type: ignore[attr-defined]
    assert required <= message.keys(), (cls.__name__, message)
    assert message.keys() <= required | optional, (cls.__name__, message)
    hints = typing.get_type_hints(cls)
    for key, value in message.items():
        assert conforms(value, hints[key]), (cls.__name__, key, value, hints[key])
    frame = protocol.encode(message)
    (size,) = protocol.HEADER.unpack_from(frame)
    assert size == len(frame) - protocol.HEADER.size
    assert protocol.decode(frame[protocol.HEADER.size :]) == message
    assert protocol.read_message(io.BytesIO(frame)) == message
    return cls


# --- the TypedDicts -------------------------------------------------------------------------

EXAMPLES: list[dict[str, Any]] = [
    {"t": "predict", "id": "p1", "input": {"prompt": "a cat", "n": [1, 2.5]}, "context": {}},
    {"t": "cancel", "id": "p1"},
    {"t": "health", "id": 3},
    {"t": "shutdown"},
    {"t": "setup"},
    {
        "t": "ready",
        "slots": 1,
        "is_async": False,
        "import_time": 0.5,
        "setup_time": 1.25,
        "modules": ["numpy", "wave"],
        "environ": {"KMP_INIT_AT_FORK": "FALSE", "GONE": None},
    },
    {"t": "warm", "import_time": 0.5, "environ": {}},
    {"t": "setup_failed", "error": "weights file is corrupt"},
    {"t": "log", "id": None, "source": "stderr", "text": "loading ünïcode ✓\n"},
    {"t": "log", "id": "p1", "source": "stdout", "text": "hello\n"},
    {"t": "output", "id": "p1", "index": 0, "value": {protocol.FILE_KEY: "/tmp/x.png"}},
    {"t": "metric", "id": "p1", "name": "timing.ms", "value": 12, "mode": "incr"},
    {
        "t": "done",
        "id": "p1",
        "status": "succeeded",
        "output": {"a": [1, None, "x"]},
        "metrics": {"timing": {"ms": 12}},
        "predict_time": 0.25,
    },
    {
        "t": "done",
        "id": "p1",
        "status": "failed",
        "output": None,
        "metrics": {},
        "predict_time": 1,
        "error": "boom",
        "is_stream": True,
    },
    {"t": "health", "id": 3, "ok": False, "error": "user-defined healthcheck returned False"},
]


def test_every_kind_has_one_typeddict_with_a_literal_t() -> None:
    assert set(PARENT_KINDS) == {"predict", "cancel", "health", "shutdown", "setup"}
    assert set(WORKER_KINDS) == {
        "ready",
        "warm",
        "setup_failed",
        "log",
        "output",
        "metric",
        "done",
        "health",
    }
    assert set(kinds(protocol.ControlMessage)) == {"cancel", "health", "shutdown", "setup"}
    assert protocol.DoneMessage.__optional_keys__ == {"error", "is_stream"}


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m["t"])
def test_each_kind_round_trips(message: dict[str, Any]) -> None:
    table = PARENT_KINDS if message["t"] in PARENT_KINDS and "ok" not in message else WORKER_KINDS
    check_message(message, table)


def test_the_checker_rejects_what_a_typeddict_does_not_allow() -> None:
    with pytest.raises(AssertionError):
        check_message({"t": "cancel", "id": "p1", "extra": 1}, PARENT_KINDS)
    with pytest.raises(AssertionError):
        check_message({"t": "ready", "slots": 1}, WORKER_KINDS)
    with pytest.raises(AssertionError):
        check_message(
            {"t": "metric", "id": "p", "name": "n", "value": 1, "mode": "x"}, WORKER_KINDS
        )


# --- frame sizes ----------------------------------------------------------------------------


def test_describe_size() -> None:
    assert protocol.describe_size(512) == "512 bytes"
    assert protocol.describe_size(1536) == "1.5 KiB"
    assert protocol.describe_size(64 * MiB) == "64 MiB"
    assert protocol.describe_size(70 * MiB) == "70 MiB"
    assert protocol.describe_size(5 * 1024 * MiB) == "5 GiB"


def test_encode_refuses_a_message_over_the_limit() -> None:
    assert protocol.MAX_FRAME == 64 * MiB
    with pytest.raises(protocol.FrameTooLarge) as caught:
        protocol.encode({"t": "output", "value": "x" * (70 * MiB)})
    assert str(caught.value) == "the message would be 70 MiB; the limit is 64 MiB"
    assert isinstance(caught.value, ValueError)  # as for values that are not JSON


def test_a_frame_of_exactly_the_limit_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_FRAME", 1000)
    padding = 1000 - len(protocol.encode({"t": "x", "v": ""})) + protocol.HEADER.size
    frame = protocol.encode({"t": "x", "v": "a" * padding})
    assert len(frame) == 1000 + protocol.HEADER.size
    assert protocol.read_message(io.BytesIO(frame)) == {"t": "x", "v": "a" * padding}
    with pytest.raises(protocol.FrameTooLarge, match="^the message would be 1001 bytes; the"):
        protocol.encode({"t": "x", "v": "a" * (padding + 1)})


class CountingStream(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.asked: list[int] = []

    def read(self, size: int | None = -1) -> bytes:
        self.asked.append(-1 if size is None else size)
        return super().read(size)


def test_the_worker_refuses_an_oversize_frame_before_reading_its_body() -> None:
    stream = CountingStream(protocol.HEADER.pack(70 * MiB) + b"{}")
    with pytest.raises(protocol.FrameTooLarge) as caught:
        protocol.read_message(stream, "the runner")
    assert str(caught.value) == "the runner sent a 70 MiB message; the limit is 64 MiB"
    assert stream.asked == [protocol.HEADER.size]  # the body was never read
    just_over = CountingStream(protocol.HEADER.pack(protocol.MAX_FRAME + 1))
    with pytest.raises(
        protocol.FrameTooLarge, match="67108865 bytes message; the limit is 67108864"
    ):
        protocol.read_message(just_over)


def test_decode_refuses_what_is_not_a_message() -> None:
    with pytest.raises(protocol.ProtocolError, match="^the worker sent a message that is not"):
        protocol.decode(b"{not json", "the worker")
    with pytest.raises(protocol.ProtocolError, match="without a 't' key"):
        protocol.decode(b"[1, 2]")
    with pytest.raises(protocol.ProtocolError, match="without a 't' key"):
        protocol.decode(b'{"id": "x"}')


class Recorder:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.errors: list[protocol.ProtocolError] = []


def connection() -> tuple[Connection, Recorder]:
    seen = Recorder()
    lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    return Connection(seen.messages.append, lost, seen.errors.append), seen


@session_loop
async def test_the_connection_splits_frames_across_reads() -> None:
    conn, seen = connection()
    frames = b"".join(protocol.encode(m) for m in EXAMPLES[4:])
    for start in range(0, len(frames), 7):
        conn.data_received(frames[start : start + 7])
    assert seen.messages == EXAMPLES[4:] and not seen.errors


@session_loop
async def test_the_connection_refuses_an_oversize_frame_without_buffering_it() -> None:
    conn, seen = connection()
    ready = {"t": "ready", "slots": 1, "is_async": False}
    conn.data_received(protocol.encode(ready) + protocol.HEADER.pack(70 * MiB) + b"x" * 1000)
    assert seen.messages == [ready]  # what came before the bad frame is delivered
    assert [str(e) for e in seen.errors] == [
        "the worker sent a 70 MiB message; the limit is 64 MiB"
    ]
    assert len(conn._buffer) == 0
    conn.data_received(b"y" * 100_000 + protocol.encode(ready))  # the stream is out of step now
    assert len(seen.messages) == 1 and len(seen.errors) == 1 and len(conn._buffer) == 0


@session_loop
async def test_the_connection_reports_a_message_that_is_not_json() -> None:
    conn, seen = connection()
    conn.data_received(protocol.HEADER.pack(5) + b"{oops")
    assert [str(e).split(":")[0] for e in seen.errors] == [
        "the worker sent a message that is not valid JSON"
    ]


# --- the worker's side of the cap, in this process -------------------------------------------


class InProcessWorker:
    """A `worker.Worker` on a socket pair; `messages()` reads what it sent."""

    def __init__(self) -> None:
        self.ours, theirs = socket.socketpair()
        control, self.control = socket.socketpair()
        self.worker = worker.Worker(theirs, control, worker.WorkerConfig(ref="predict.py"))
        self.stream = self.ours.makefile("rb")

    def messages(self, count: int) -> list[dict[str, Any]]:
        return [protocol.read_message(self.stream, "the worker") for _ in range(count)]

    def close(self) -> None:
        for sock in (self.ours, self.control, self.worker.sock, self.worker.control):
            sock.close()


@pytest.fixture
def inprocess() -> Any:
    made = InProcessWorker()
    yield made
    made.close()


def test_a_long_log_line_goes_as_several_messages(inprocess: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(worker, "LOG_CHUNK", 4)
    inprocess.worker.send_log("p1", "stdout", "0123456789\n")
    sent = inprocess.messages(3)
    assert [m["text"] for m in sent] == ["0123", "4567", "89\n"]
    for message in sent:
        check_message(message, WORKER_KINDS)
    # JSON escapes a control character as 6 bytes: a chunk of them still fits a frame
    assert worker.LOG_CHUNK * 6 + 200 < protocol.MAX_FRAME


def test_an_output_over_the_limit_fails_the_prediction(inprocess: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(protocol, "MAX_FRAME", 1000)
    run = worker.Running("p1", {"t": "predict", "id": "p1", "input": {}, "context": {}})
    outcome: Any = {"status": "succeeded", "output": "x" * 2000}
    inprocess.worker._done(run, outcome, scope.Scope(), 0.0)
    (done,) = inprocess.messages(1)
    check_message(done, WORKER_KINDS)
    assert done["status"] == "failed" and done["output"] is None
    assert done["error"].startswith("the output is too large to send to the runner: the message")
    with pytest.raises(ValueError, match="^output item 2 is too large to send to the runner: "):
        inprocess.worker._send_output(run, 2, "y" * 2000)
    with pytest.raises(scope.MetricError, match="^metric 'big' is too large to send: "):
        scope.Scope().record_metric("big", "z" * 2000)


# --- real workers ---------------------------------------------------------------------------


async def until_log(events: AsyncIterator[Event], text: str) -> None:
    async def read() -> None:
        async for event in events:
            if isinstance(event, Log) and text in event.text:
                return
            assert not isinstance(event, Done), event
        raise AssertionError(f"no log {text!r}")

    await asyncio.wait_for(read(), PREDICTION_LIMIT)


class Capture:
    """Every message between the runners and their workers, both ways."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sent: list[dict[str, Any]] = []
        self.received: list[dict[str, Any]] = []
        self.recording = True
        encode = protocol.encode

        def recording_encode(message: Any) -> bytes:
            if self.recording and message.get("t") in PARENT_KINDS and "ok" not in message:
                self.sent.append(dict(message))
            return encode(message)

        monkeypatch.setattr(protocol, "encode", recording_encode)

    def attach(self, runner: Runner) -> Runner:
        handle = runner._handle

        def recording_handle(message: Any) -> None:
            self.received.append(dict(message))
            handle(message)

        runner._handle = recording_handle  # type: ignore[method-assign]
        return runner


@session_loop
async def test_the_typeddicts_match_what_a_real_worker_sends(
    runners: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    capture = Capture(monkeypatch)
    # stream outputs and logs; a plain output with metrics; a failure; setup logs and failure
    iterator = capture.attach(await runners("output_iterator"))
    streamed = (await predict(iterator, {"n": 2}))[-1]
    assert isinstance(streamed, Done) and streamed.output == ["item 0", "item 1"]
    metrics = capture.attach(await runners("metrics"))
    assert isinstance((await predict(metrics, {}))[-1], Done)
    failing = capture.attach(await runners("predict_error"))
    assert (await predict(failing, {}))[-1].error == "this is a value error"  # type: ignore[union-attr]
    broken = capture.attach(await runners("setup_failure"))
    assert (await predict(broken, {}))[-1].status == "failed"  # type: ignore[union-attr]
    # cancel; health, healthy and not
    canceled = capture.attach(await runners("cancel_sync"))
    events = canceled.predict(inputs(canceled, {"seconds": 60}), prediction_id="long")
    try:
        await until_log(events, "started")
        assert await canceled.cancel("long")
        rest = [event async for event in events]
    finally:
        await events.aclose()
    assert isinstance(rest[-1], Done) and rest[-1].status == "canceled"
    health = capture.attach(await runners("healthcheck"))
    await health.start()
    assert await health.health() == Health("READY")
    await predict(health, {"healthy": False})
    assert await health.health() == Health("UNHEALTHY", "user-defined healthcheck returned False")
    await health.stop()  # shutdown
    # a template: imports, says it is warm, and runs setup() when told to
    template = capture.attach(await runners("output_str"))
    assert await template.prewarm(["wave"], PREDICTION_LIMIT)
    await template.start()
    assert template.from_template and "wave" in template.modules  # preloaded, still learned
    capture.recording = False

    seen: dict[type, list[dict[str, Any]]] = {}
    for message in capture.received:
        seen.setdefault(check_message(message, WORKER_KINDS), []).append(message)
    for message in capture.sent:
        seen.setdefault(check_message(message, PARENT_KINDS), []).append(message)
    never = {cls.__name__ for cls in [*WORKER_KINDS.values(), *PARENT_KINDS.values()]} - {
        cls.__name__ for cls in seen
    }
    assert not never, f"no real message of {never}"
    # every optional key is really used, and each sometimes left out
    for cls, messages in seen.items():
        for key in cls.__optional_keys__:  # type: ignore[attr-defined]
            assert any(key in m for m in messages), (cls.__name__, key)
            assert any(key not in m for m in messages), (cls.__name__, key)
    logs = seen[protocol.LogMessage]
    assert {m["id"] is None for m in logs} == {True, False}  # setup output, prediction output
    assert {m["source"] for m in logs} <= {"stdout", "stderr"}
    assert {m["status"] for m in seen[protocol.DoneMessage]} == {"succeeded", "failed", "canceled"}
    assert {m["ok"] for m in seen[protocol.HealthReply]} == {True, False}
    assert {m["mode"] for m in seen[protocol.MetricMessage]} == {"replace", "incr", "append"}


@session_loop
async def test_an_oversize_input_fails_only_its_prediction(runners: Any) -> None:
    runner = await runners("async_concurrency")
    await runner.start()
    pid = runner.pid
    running = asyncio.ensure_future(predict(runner, {"seconds": 0.5, "tag": "small"}))
    await asyncio.sleep(0.1)
    events = await predict(runner, {"seconds": 0, "tag": "x" * (65 * MiB)}, prediction_id="big")
    assert events == [
        Done(
            "failed",
            error="The input is too large to send to the worker: "
            "the message would be 65 MiB; the limit is 64 MiB",
        )
    ]
    small = (await running)[-1]
    assert isinstance(small, Done) and small.status == "succeeded"
    assert small.output["tag"] == "small"
    assert runner.pid == pid and runner.state == RunnerState.READY


@session_loop
async def test_an_input_that_is_not_json_fails_only_its_prediction(runners: Any) -> None:
    runner = await runners("output_str")
    events = [e async for e in runner.predict({"name": float("nan")})]
    assert len(events) == 1 and isinstance(events[0], Done) and events[0].status == "failed"
    assert events[0].error is not None
    assert events[0].error.startswith("The input cannot be sent to the worker: ")
    assert runner._inflight == {} and runner._waiting == {}
    assert (await predict(runner, {"name": "x"}))[-1].output == "hello x"  # type: ignore[union-attr]


@session_loop
async def test_an_oversize_frame_from_the_worker_fails_the_predictions_in_flight(
    runners: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = await runners("async_concurrency")
    await runner.start()
    pid = runner.pid
    tag = "x" * 100_000
    message = {"t": "predict", "id": "big", "input": inputs(runner, {"seconds": 0, "tag": tag})}
    message["context"] = {}
    # The runner accepts its own predict message, but not the (longer) done that answers it; the
    # worker, another process, keeps the real limit and sends it.
    limit = len(protocol.encode(message)) - protocol.HEADER.size
    monkeypatch.setattr(protocol, "MAX_FRAME", limit)
    waiting = runner.predict(inputs(runner, {"seconds": 60, "tag": "waiting"}), prediction_id="w")
    try:
        assert isinstance(await waiting.__anext__(), Started)
        big = (await predict(runner, {"seconds": 0, "tag": tag}, prediction_id="big"))[-1]
        other = [event async for event in waiting][-1]
    finally:
        await waiting.aclose()
    assert isinstance(big, Done) and isinstance(other, Done)
    assert big.status == other.status == "failed"
    assert big.error == other.error
    assert big.error is not None
    assert re.fullmatch(
        rf"The worker sent a [\d.]+ KiB message; the limit is {protocol.describe_size(limit)}",
        big.error,
    )
    assert runner.state == RunnerState.DEFUNCT
    monkeypatch.undo()
    again = (await predict(runner, {"seconds": 0, "tag": "again"}))[-1]
    assert isinstance(again, Done) and again.status == "succeeded"
    assert runner.pid != pid


@session_loop
async def test_a_worker_sent_an_oversize_frame_exits_and_says_why(runners: Any) -> None:
    runner = await runners("cancel_sync")
    await runner.start()
    events = runner.predict(inputs(runner, {"seconds": 60}), prediction_id="long")
    try:
        await until_log(events, "started")
        assert runner._control is not None
        runner._control.sendall(protocol.HEADER.pack(70 * MiB))  # on the control socket
        rest = [event async for event in events]
    finally:
        await events.aclose()
    result = rest[-1]
    assert isinstance(result, Done) and result.status == "failed"
    assert result.error == f"The worker process died: {describe_exit(protocol.EXIT_PROTOCOL_ERROR)}"
    assert "(it received a message it could not accept)" in result.error
    stderr = "".join(e.text for e in rest if isinstance(e, Log) and e.source == "stderr")
    assert "modelyard worker: the runner sent a 70 MiB message; the limit is 64 MiB" in stderr
    # on the data socket, between predictions: the worker exits and is replaced
    pid = runner.pid
    assert runner.state == RunnerState.DEFUNCT
    assert (await predict(runner, {"seconds": 0}))[-1].status == "succeeded"  # type: ignore[union-attr]
    assert runner.pid != pid
    assert runner._writer is not None
    runner._writer.write(protocol.HEADER.pack(protocol.MAX_FRAME + 1))
    await asyncio.wait_for(_until(lambda: runner.state == RunnerState.DEFUNCT), PREDICTION_LIMIT)
    assert "67108865 bytes message" in "".join(runner._stderr_tail)


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.01)


@session_loop
async def test_runner_states_are_a_str_enum(runners: Any) -> None:
    runner = await runners("output_str")
    assert runner.state is RunnerState.STOPPED and runner.state == "STOPPED"
    assert Health("READY") == Health(RunnerState.READY)
    assert Health("READY").status is RunnerState.READY
    assert f"{RunnerState.BUSY}" == "BUSY"
    with pytest.raises(ValueError):
        Health("SLEEPY")
    await runner.start()
    assert runner.state is RunnerState.READY
