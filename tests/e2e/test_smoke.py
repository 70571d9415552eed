"""The platform answers the official Python client end to end: push, run, stream, poll."""

from __future__ import annotations

from live import LiveServer


def test_run_streams_and_polls_hello(server: LiveServer, hello: str) -> None:
    client = server.replicate()
    output = client.run("admin/hello", input={"name": "Ada", "repeat": 2})
    assert list(output) == ["Hello, Ada! ", "Hello, Ada! "]
    events = [str(e) for e in client.stream(f"admin/hello:{hello}", input={"name": "Bo"})]
    assert "Hello, Bo! " in events
    prediction = client.predictions.create(version=hello, input={"name": "Cy"})
    prediction.wait()
    assert prediction.status == "succeeded"
    assert prediction.output == ["Hello, Cy! "]
    assert prediction.metrics["predict_time"] > 0
