"""Running one input on each side: coglet and Modelyard started on the same package, and the
Outcome of a prediction on each.

Cog's side is coglet 0.23.1 run without Docker (``bench/coglet.py``, with the schema Modelyard
generated); Modelyard's side is ``LocalModel`` (``validate()``, ``start()``, the ``predict()``
events up to ``Done``). Both sides run in the same model environment, one ``Pair`` per package.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is a top-level folder of the repository, not installed
    sys.path.insert(0, str(ROOT))

from bench.coglet import CogletServer

from modelyard.cogspec.inputs import InputValidationError
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import Done, Log, Output
from modelyard.runtime.local import LocalModel
from modelyard.runtime.runner import SetupFailed

from .normalise import coglet_metrics, coglet_setup_failure_error, comparable, numbers_as_annotated

FIXTURES = ROOT / "tests" / "fixtures"
#: Upper bound for one prediction on either side (a hang fails the test instead of blocking CI).
CASE_TIMEOUT = 120.0


@dataclass
class Outcome:
    """What one side did with one input.

    kind: ``prediction`` (it ran), ``invalid`` (422 / InputValidationError), ``setup_failed``
    (coglet's 503 after a failed setup), ``busy`` (coglet's 409).
    """

    kind: str
    status: str | None = None
    output: Any = None
    error: str | None = None
    logs: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    detail: list[dict[str, Any]] = field(default_factory=list)
    raw: Any = None
    #: coglet only: what the model wrote straight to fds 1/2 during this request.
    fd_output: Callable[[], list[str]] = field(default=list, repr=False)


def coglet_outcome(
    server: CogletServer, payload: Any, context: dict[str, str] | None = None
) -> Outcome:
    """One prediction request to coglet, whatever it answers (200, 422, 503, 409)."""
    since = server.log_size()
    response = server.post_prediction(payload, context=context)
    body = response.json()
    if response.status_code == 200:
        return Outcome(
            "prediction",
            body["status"],
            comparable(body.get("output")),
            body.get("error"),
            body.get("logs") or "",
            coglet_metrics(body.get("metrics")),
            raw=body,
            fd_output=lambda: server.user_output(since),
        )
    if response.status_code == 422:
        return Outcome("invalid", detail=body["detail"], raw=body)
    if response.status_code == 503 and server.get_health()["status"] == "SETUP_FAILED":
        return Outcome("setup_failed", error=coglet_setup_failure_error(server.health), raw=body)
    if response.status_code == 409:
        return Outcome("busy", raw=body)
    raise AssertionError(f"coglet answered {response.status_code}: {body}")


class EventLoopThread:
    """An asyncio loop in a thread: Modelyard's async API driven from sync tests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = CASE_TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def collect_events(model: LocalModel, inputs: dict[str, Any], **kwargs: Any) -> list[Any]:
    """Every event of one prediction on a started model, up to and including ``Done``."""
    events = []
    async for event in model.predict(inputs, **kwargs):
        events.append(event)
    return events


def modelyard_outcome(
    loop: EventLoopThread, model: LocalModel, payload: Any, context: dict[str, str] | None = None
) -> Outcome:
    """One prediction on Modelyard's side: validate, then the events up to ``Done``."""
    try:
        inputs = model.validate(payload)
    except InputValidationError as exc:
        return Outcome("invalid", detail=exc.detail(), raw=exc)
    events = loop.run(collect_events(model, inputs, context=context))
    done = events[-1]
    assert isinstance(done, Done), events
    assert sum(isinstance(e, Done) for e in events) == 1, events
    streamed = [e.value for e in events if isinstance(e, Output)]
    if done.is_stream and done.status == "succeeded":
        assert done.output == streamed, "the final output is not the list of streamed items"
    logs = "".join(e.text for e in events if isinstance(e, Log))
    return Outcome(
        "prediction",
        done.status,
        comparable(done.output),
        done.error,
        logs,
        dict(done.metrics),
        raw=events,
    )


@dataclass(frozen=True)
class Package:
    """A package to compare: a fixture folder, or an inline package (written at setup)."""

    name: str
    path: Path | None = None
    mode: str = "predict"

    def __str__(self) -> str:
        return self.name if self.mode == "predict" else f"{self.name}[{self.mode}]"


class Pair:
    """coglet and Modelyard running the same package."""

    def __init__(self, path: Path, mode: str, builder: EnvironmentBuilder, loop: EventLoopThread):
        self.path = path
        self.loop = loop
        self.model = LocalModel(path, mode=mode, builder=builder)
        environment = loop.run(self.model.ensure_environment(), timeout=600)
        self.coglet = CogletServer(path, self.model.schema, environment.python, mode=mode)
        self.coglet.start(wait=False)  # coglet boots while Modelyard runs setup()
        self.setup_error: str | None = None
        self.restart_coglet_after = False
        try:
            loop.run(self.model.start())
        except SetupFailed as exc:
            self.setup_error = str(exc)
        self.coglet.wait_until_started()

    def ensure_coglet_usable(self) -> None:
        """After its worker died coglet refuses every prediction (409) forever: start a new one.
        Also after a prediction left an unterminated log line behind, which coglet would put in
        the next prediction's logs."""
        process_gone = self.coglet.process is None or self.coglet.process.poll() is not None
        if (
            process_gone
            or self.restart_coglet_after
            or self.coglet.get_health()["status"] in ("UNHEALTHY", "DEFUNCT")
        ):
            self.restart_coglet_after = False
            self.coglet.restart()

    def both(self, payload: Any, context: dict[str, str] | None = None) -> tuple[Outcome, Outcome]:
        """The outcome of ``payload`` on each side (numbers replayed as annotated, see
        numbers_as_annotated)."""
        self.ensure_coglet_usable()
        cog = coglet_outcome(self.coglet, payload, context)
        mine = modelyard_outcome(self.loop, self.model, payload, context)
        if cog.kind == "prediction" and mine.kind == "prediction":
            converted = numbers_as_annotated(payload, self.model.validate(payload))
            if converted is not None:
                assert cog.status == mine.status or cog.status == "failed", (cog, mine)
                self.ensure_coglet_usable()
                cog = coglet_outcome(self.coglet, converted, context)
        if mine.kind == "prediction" and mine.logs and not mine.logs.endswith("\n"):
            self.restart_coglet_after = True  # see coglet_holds_back_unterminated_line
        return cog, mine

    def stop(self) -> None:
        try:
            self.loop.run(self.model.stop(), timeout=30)
        finally:
            self.coglet.stop()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll a condition (a bound, not an assertion on time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)
