"""Server-sent events at `urls.stream`, through the official Python client and raw httpx.

The rules come from replicate-api.md §3.5: no auth needed (the JS client sends none), every event
has an `id:`, only `output`/`logs`/`error`/`done`, replay from the first event for late
listeners, `Last-Event-ID` resumes, heartbeats are comments, `done` ends every stream.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import replicate
from live import PACKAGES, LiveServer, Tls, fixture_package, serving
from predicting import TERMINAL, check_shape, get, start, wait_for
from replicate.stream import ServerSentEvent
from tests.contract.openapi import Contract, Recorder

NAMES = {"output", "logs", "error", "done"}


@dataclass(frozen=True)
class Sse:
    """One event (`name` set) or one comment (`comment` set) as it came off the wire."""

    id: str | None = None
    name: str | None = None
    data: str = ""
    comment: str | None = None


def sse_lines(lines: Iterator[str]) -> Iterator[Sse]:
    """A small SSE parser that keeps comments and events without ids (to catch them)."""
    fields: dict[str, Any] = {}
    data: list[str] = []
    for line in lines:
        if line.startswith(":"):
            yield Sse(comment=line[1:].strip())
        elif line == "":
            if fields or data:
                yield Sse(id=fields.get("id"), name=fields.get("event"), data="\n".join(data))
            fields, data = {}, []
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "data":
                data.append(value)
            else:
                fields[key] = value


def events(server: LiveServer, url: str, **headers: str) -> Iterator[Sse]:
    """GET the stream WITHOUT an Authorization header and yield what arrives, up to `done`."""
    accept = {"Accept": "text/event-stream", **headers}
    with (
        httpx.Client(verify=server.tls.context(), timeout=60) as plain,
        plain.stream("GET", url, headers=accept) as r,
    ):
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        for item in sse_lines(r.iter_lines()):
            yield item
            if item.name == "done":
                return


def check_events(items: list[Sse]) -> list[Sse]:
    """Every event has an id, a known name, ids grow; the last one is `done`. Returns events."""
    found = [i for i in items if i.comment is None]
    for event in found:
        assert event.id, event
        assert event.name in NAMES, event
    order = [_position(e.id) for e in found]  # type: ignore[arg-type]
    assert order == sorted(order) and len(set(order)) == len(order)
    assert found and found[-1].name == "done", found
    return found


def _position(event_id: str) -> tuple[int, float]:
    """`p:7.0`, `p:7.1`, `p:7`: the frames of event 7, its last frame without a suffix."""
    seq, _, frame = event_id.rpartition(":")[2].partition(".")
    return int(seq), float(frame) if frame else float("inf")


def outputs(items: list[Sse]) -> list[str]:
    return [e.data for e in items if e.name == "output"]


@pytest.fixture
def recorder() -> Recorder:
    """Checked by each test itself (the conftest's would check once, at the module's end)."""
    return Recorder()


def test_python_client_streams_the_outputs_in_order(server: LiveServer, ticker: str) -> None:
    client = server.replicate()
    for ref in (f"admin/ticker:{ticker}", "admin/ticker"):
        got = list(client.stream(ref, input={"n": 5}))
        assert [str(e) for e in got if e.event == ServerSentEvent.EventType.OUTPUT] == [
            f"tick {i}" for i in range(5)
        ]
        assert got[-1].event == ServerSentEvent.EventType.DONE


def test_raw_stream_needs_no_auth_and_follows_the_rules(
    server: LiveServer, api: httpx.Client, ticker: str, recorder: Recorder
) -> None:
    prediction = start(api, ticker, n=3)
    found = check_events(list(events(server, prediction["urls"]["stream"])))
    assert outputs(found) == ["tick 0", "tick 1", "tick 2"]
    assert [e.data for e in found if e.name == "logs"] == ["log 0", "log 1", "log 2"]
    assert json.loads(found[-1].data) == {}
    assert get(api, prediction["id"])["output"] == outputs(found)  # two views of one log
    recorder.check_all(Contract.load())


@pytest.fixture
def finished_stream(api: httpx.Client, ticker: str) -> str:
    """The stream URL of a fresh four-tick prediction that has already succeeded."""
    prediction = start(api, ticker, n=4)
    wait_for(api, prediction["id"], {"succeeded"})
    return prediction["urls"]["stream"]


def test_late_listener_gets_everything_then_done(server: LiveServer, finished_stream: str) -> None:
    first = check_events(list(events(server, finished_stream)))
    assert outputs(first) == [f"tick {i}" for i in range(4)]
    again = check_events(list(events(server, finished_stream)))
    assert again == first  # the same events, ids included


def test_last_event_id_resumes_after_that_event(server: LiveServer, finished_stream: str) -> None:
    everything = check_events(list(events(server, finished_stream)))
    cut = [i for i, e in enumerate(everything) if e.name == "output"][1]  # after "tick 1"
    rest = check_events(
        list(events(server, finished_stream, **{"Last-Event-ID": everything[cut].id}))
    )
    assert rest == everything[cut + 1 :]
    assert outputs(rest) == ["tick 2", "tick 3"]


def test_live_listener_sees_items_as_they_come(
    server: LiveServer, api: httpx.Client, ticker: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    prediction = start(api, ticker, n=3, gate=str(gate))
    seen: list[Sse] = []
    for item in events(server, prediction["urls"]["stream"]):
        seen.append(item)
        if item.name == "output" and item.data == "tick 0":
            # the model now waits for the gate: this event came while it ran
            assert api.get(f"/v1/predictions/{prediction['id']}").json()["status"] == "processing"
            gate.touch()
    assert outputs(check_events(seen)) == ["tick 0", "tick 1", "tick 2"]


def test_resume_mid_stream_and_many_listeners_agree(
    server: LiveServer, api: httpx.Client, ticker: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    prediction = start(api, ticker, n=3, gate=str(gate))
    url = prediction["urls"]["stream"]
    first: list[Sse] = []
    for item in events(server, url):  # leave after the first output, as a dropped client does
        first.append(item)
        if item.name == "output":
            break
    last_id = [e for e in first if e.comment is None][-1].id
    listeners: list[list[Sse]] = [[] for _ in range(3)]

    def listen(into: list[Sse]) -> None:
        into.extend(events(server, url, **{"Last-Event-ID": last_id}))

    threads = [threading.Thread(target=listen, args=(into,)) for into in listeners]
    for thread in threads:
        thread.start()
    gate.touch()
    for thread in threads:
        thread.join()
    rests = [check_events(into) for into in listeners]
    assert outputs(rests[0]) == ["tick 1", "tick 2"]
    assert rests[1] == rests[0] and rests[2] == rests[0]


@pytest.mark.parametrize("fixture", ["predict_error", "output_str"])
def test_event_ids_are_unique_so_a_resume_always_ends_with_done(
    server: LiveServer, api: httpx.Client, fixture: str
) -> None:
    version = server.push(fixture_package(fixture), f"admin/{fixture.replace('_', '-')}")
    body = {"version": version, "input": {}, "stream": True}
    prediction = api.post("/v1/predictions", json=body, headers={"Prefer": "wait"}).json()
    everything = check_events(list(events(server, prediction["urls"]["stream"])))
    ids = [e.id for e in everything]
    assert len(ids) == len(set(ids)), ids
    for event in everything[:-1]:
        resumed = list(events(server, prediction["urls"]["stream"], **{"Last-Event-ID": event.id}))
        assert [e.name for e in resumed if e.comment is None][-1:] == ["done"], event


@pytest.fixture(scope="module")
def beating(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    """A second server that sends a heartbeat after 0.2 s without events."""
    with serving(tmp_path_factory, tls, "beating", "--heartbeat-interval", "0.2") as live:
        yield live


def test_heartbeats_are_comments_while_the_model_is_quiet(
    beating: LiveServer, tmp_path: Path
) -> None:
    version = beating.push(PACKAGES / "ticker", "admin/ticker")
    gate = tmp_path / "gate"
    with beating.http() as api:
        prediction = start(api, version, n=2, gate=str(gate))
        seen: list[Sse] = []
        beats_after_first = 0
        for item in events(beating, prediction["urls"]["stream"]):
            seen.append(item)
            if outputs(seen) and item.comment is not None:
                beats_after_first += 1
                if beats_after_first == 2:  # two heartbeats while the model waits
                    gate.touch()
    assert beats_after_first >= 2
    assert outputs(check_events(seen)) == ["tick 0", "tick 1"]


@pytest.mark.parametrize(
    ("fixture", "input", "items", "error"),
    [
        ("predict_error", {}, [], "this is a value error"),
        ("iterator_error", {"n": 2}, ["item 0", "item 1"], "broke mid-stream"),
    ],
)
def test_a_failing_model_sends_error_then_done(
    server: LiveServer,
    api: httpx.Client,
    fixture: str,
    input: dict[str, Any],
    items: list[str],
    error: str,
) -> None:
    version = server.push(fixture_package(fixture), f"admin/{fixture.replace('_', '-')}")
    response = api.post(
        "/v1/predictions", json={"version": version, "input": input, "stream": True}
    )
    found = check_events(list(events(server, response.json()["urls"]["stream"])))
    assert outputs(found) == items
    assert [e.name for e in found][-2:] == ["error", "done"]
    assert error in json.loads(found[-2].data)["detail"]
    assert json.loads(found[-1].data) == {"reason": "error"}
    with pytest.raises(RuntimeError, match=error):  # the Python client raises on `error`
        list(server.replicate().stream(f"admin/{fixture.replace('_', '-')}", input=input))


def test_cancel_ends_the_stream_with_done_canceled(
    server: LiveServer, api: httpx.Client, ticker: str, tmp_path: Path
) -> None:
    prediction = start(api, ticker, n=3, gate=str(tmp_path / "never"))
    seen: list[Sse] = []
    for item in events(server, prediction["urls"]["stream"]):
        seen.append(item)
        if item.name == "output":
            assert api.post(f"/v1/predictions/{prediction['id']}/cancel").status_code == 200
    found = check_events(seen)
    assert outputs(found) == ["tick 0"]
    assert "error" not in [e.name for e in found]
    assert json.loads(found[-1].data) == {"reason": "canceled"}


def test_unknown_stream_is_a_404_problem(server: LiveServer) -> None:
    with httpx.Client(base_url=server.url, verify=server.tls.context()) as plain:
        for key in ("nope", uuid.uuid4().hex):
            response = plain.get(f"/v1/streams/{key}")
            assert response.status_code == 404
            assert response.headers["content-type"].startswith("application/problem+json")
            assert response.json()["status"] == 404 and response.json()["detail"]


def test_python_client_reports_a_model_that_cannot_stream(server: LiveServer, noop: str) -> None:
    """No `urls.stream` without an iterator or `stream: true`: the client says so itself."""
    prediction = server.replicate().predictions.create(version=noop, input={})
    with pytest.raises(replicate.exceptions.ReplicateError, match="does not support streaming"):
        list(prediction.stream())


async def test_the_async_client_runs_and_streams(
    server: LiveServer, noop: str, ticker: str
) -> None:
    client = replicate.Client(
        api_token=server.token,
        base_url=server.url,
        transport=httpx.AsyncHTTPTransport(verify=server.tls.context()),
    )
    assert await client.async_run(f"admin/noop:{noop}") == "ok"
    prediction = await client.predictions.async_create(model="admin/noop", input={})
    await prediction.async_wait()
    assert prediction.output == "ok"
    stream = await client.async_stream(f"admin/ticker:{ticker}", input={"n": 3})
    assert [e.data async for e in stream if e.event.value == "output"] == [
        "tick 0",
        "tick 1",
        "tick 2",
    ]


def test_urls_stream_for_iterators_and_when_asked(
    api: httpx.Client, noop: str, ticker: str, recorder: Recorder, server: LiveServer
) -> None:
    iterator = start(api, ticker, n=1)
    assert "stream" in iterator["urls"]
    plain = start(api, noop)
    assert "stream" not in plain["urls"]
    asked = api.post("/v1/predictions", json={"version": noop, "input": {}, "stream": True})
    assert "stream" in asked.json()["urls"]
    for body in (iterator, plain, asked.json()):
        check_shape(server, wait_for(api, body["id"], TERMINAL))
    recorder.check_all(Contract.load())
