"""Differential tests: the same Cog packages and inputs, run by Cog's own server and by Modelyard.

Cog's side is coglet 0.23.1 run without Docker (``bench/coglet.py``, with the schema Modelyard
generated); Modelyard's side is ``LocalModel`` (``validate()``, ``start()``, the ``predict()``
events up to ``Done``). Both sides run in the same model environment, one pair per package.

Packages: every ``tests/fixtures/<name>/`` with a ``cases.json`` (the cases marked
``compare_with_coglet: true``), plus the small inline packages at the end of this file, which pin
each documented difference on both sides. A difference that is a deliberate Modelyard behaviour is
normalised in exactly one named function in the "documented differences" section, and listed in
``docs/differences-from-cog.md``; anything else fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
import mimetypes
import re
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `bench` is a top-level folder of the repository, not installed
    sys.path.insert(0, str(ROOT))

from bench.coglet import CogletServer

from modelyard.cogspec.inputs import InputValidationError
from modelyard.runtime.environment import EnvironmentBuilder
from modelyard.runtime.events import Done, Log, Output, OutputFile
from modelyard.runtime.local import LocalModel
from modelyard.runtime.runner import SetupFailed

pytestmark = pytest.mark.coglet

FIXTURES = ROOT / "tests" / "fixtures"
#: Upper bound for one prediction on either side (a hang fails the test instead of blocking CI).
CASE_TIMEOUT = 120.0
PREDICTION_STATUSES = ("succeeded", "failed", "canceled")


# =============================================================================================
# Documented differences (docs/differences-from-cog.md): each normalisation lives in one place.
# =============================================================================================


def normalise_coglet_error(error: str | None) -> str | None:
    """coglet's prediction error → the message Modelyard reports for the same exception.

    coglet wraps the exception as ``Prediction failed: Prediction failed: ValueError: boom``
    (the prefix doubled; ``Generator iteration error:`` for iterators, ``Async prediction failed:``
    for async ones). Modelyard reports the
    exception's message alone, as Cog 0.16 did, or the exception's type when the message is empty;
    for ``sys.exit(3)`` it says ``the model called sys.exit(3)``.
    """
    if error is None:
        return None
    text = error
    while True:
        stripped = re.sub(
            r"^(Prediction failed|Async prediction failed|Generator iteration error): ", "", text
        )
        if stripped == text:
            break
        text = stripped
    exit_code = re.fullmatch(r"SystemExit: ?(.*)", text, re.DOTALL)
    if exit_code:  # Modelyard names sys.exit() plainly: "the model called sys.exit(3)"
        code = exit_code.group(1)
        shown = code if re.fullmatch(r"-?\d+", code) else repr(code) if code else "None"
        return f"the model called sys.exit({shown})"
    match = re.match(r"^([A-Z][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*): ?(.*)$", text, re.DOTALL)
    if match and re.search(r"(Error|Exception|Exit|Interrupt|Warning)$", match.group(1)):
        return match.group(2) or match.group(1).rsplit(".", 1)[-1]
    return text


#: Failures both sides report, in different words: (coglet, after normalise_coglet_error; Modelyard).
KNOWN_ERROR_WORDINGS: tuple[tuple[str, str], ...] = (
    # The worker died. coglet: "Worker crashed" (then 409 forever). Modelyard says how it died
    # (exit code or signal, with a hint) and starts a new worker for the next prediction.
    (r"Worker crashed", r"The worker process died: (exited with code -?\d+|killed by SIG\w+.*)"),
    # An output JSON cannot hold.
    (
        r"Failed to serialize output: TypeError: Object of type (?P<t>\w+) is not JSON serializable",
        r"output of type (?P<t>\w+) cannot be encoded as JSON",
    ),
    # An invalid metric name: coglet says which rule it breaks, Modelyard only names it.
    (
        (
            r"metric name .*|the 'cog\.' prefix is reserved for system metrics"
            r"|'predict_time' is reserved by the runtime"
        ),
        r"invalid metric name: '.+'",
    ),
)


def same_error(coglet_error: str | None, modelyard_error: str | None) -> bool:
    """Whether the two errors say the same, allowing only the documented wording differences."""
    expected = normalise_coglet_error(coglet_error)
    if expected == modelyard_error:
        return True
    if expected is None or modelyard_error is None:
        return False
    for cog_pattern, my_pattern in KNOWN_ERROR_WORDINGS:
        cm = re.fullmatch(cog_pattern, expected, re.DOTALL)
        mm = re.fullmatch(my_pattern, modelyard_error, re.DOTALL)
        if cm and mm and cm.groupdict() == mm.groupdict():
            return True
    return False


def coglet_logs_on_failure(coglet_logs: str, modelyard_logs: str) -> None:
    """coglet drops a failed or canceled prediction's logs from its sync answer (``"logs": ""``,
    hard-coded in its routes.rs); Modelyard keeps them, with the traceback."""
    assert coglet_logs == "", f"coglet kept logs of a failed prediction: {coglet_logs!r}"


def mask_temp_paths(logs: str) -> str:
    """Temporary paths differ per run and per server (coglet downloads a file input to
    ``/tmp/tmpXXXXfile.txt``, Modelyard to ``/tmp/modelyard-in-XXXX/0/file.txt``, keeping the name)."""
    return re.sub(re.escape(tempfile.gettempdir()) + r"/[^\s'\"]*", "<tmp>", logs)


def coglet_logs_without_fd_output(
    coglet_logs: str, modelyard_logs: str, fd_output: Callable[[], list[str]]
) -> None:
    """The same logs, except what the model wrote straight to fds 1/2.

    coglet 0.23.1 leaves output of subprocesses and C code (``os.write(1, …)``, ``printf``) out of
    the prediction's ``logs`` and writes it to its own log (target ``coglet::user``); Modelyard
    captures it in the prediction's logs. So: coglet's lines must appear in Modelyard's, in order,
    and each extra line of Modelyard's must be one coglet diverted to its own log.
    """
    cog_lines = mask_temp_paths(coglet_logs).splitlines()
    my_lines = mask_temp_paths(modelyard_logs).splitlines()
    extra, position = [], 0
    for line in my_lines:
        if position < len(cog_lines) and line == cog_lines[position]:
            position += 1
        else:
            extra.append(line)
    assert position == len(cog_lines), (
        f"logs: coglet {coglet_logs!r} is not part of modelyard {modelyard_logs!r}"
    )
    if extra:  # coglet writes its log asynchronously: give it a moment
        deadline = time.monotonic() + 5
        while True:
            diverted = [mask_temp_paths(line) for line in fd_output()]
            missing = [line for line in extra if line not in diverted]
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert not missing, (
            f"logs: modelyard has {missing!r}, which coglet neither logged for the prediction "
            f"({coglet_logs!r}) nor as fd output ({diverted!r})"
        )


def coglet_holds_back_unterminated_line(coglet_logs: str, modelyard_logs: str) -> str:
    """Modelyard's logs without a last line that has no newline (what coglet's logs lack).

    Modelyard ends a prediction's logs with whatever was printed last, newline or not. coglet
    0.23.1 holds an unterminated last line back and prepends it to the logs of a later prediction
    (the next one that prints a full line). ``Pair.both`` starts a fresh coglet after such a case.
    """
    head, newline, tail = modelyard_logs.rpartition("\n")
    if not tail:
        return modelyard_logs
    assert not coglet_logs.endswith(tail), (coglet_logs, modelyard_logs)
    return head + newline


def numbers_as_annotated(payload: Any, validated: dict[str, Any]) -> Any:
    """``payload`` with each number given the JSON type Modelyard hands to the predictor, or None.

    Modelyard passes an ``int`` input as int (``2.0`` → ``2``) and a ``float`` input as float
    (``2`` → ``2.0``), as pydantic did in Cog 0.16; coglet passes the JSON number as parsed, so
    an ``int`` parameter can receive ``2.0``. The comparison replays such inputs on coglet with the
    numbers converted; the raw input is still checked for the same validity.
    """
    if not isinstance(payload, dict):
        return None
    converted = {
        k: validated[k] if k in validated and not _same_json_types(v, validated[k]) else v
        for k, v in payload.items()
    }
    return (
        converted
        if converted != payload
        or any(not _same_json_types(payload[k], converted[k]) for k in payload)
        else None
    )


def _same_json_types(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json_types(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json_types(a[k], b[k]) for k in a)
    return True


def coglet_loc(loc: list[Any]) -> list[Any]:
    """coglet's 422 ``loc`` in Modelyard's (pydantic, Cog 0.16) shape.

    coglet joins the JSON pointer of a nested value into one string (``"nums/1"``) and names a
    non-object ``input`` ``"__root__"``; Modelyard gives the path as items (``"nums", 1``) and the
    whole input as ``["body", "input"]``.
    """
    out: list[Any] = []
    for part in loc:
        if part == "__root__":
            continue
        if isinstance(part, str) and "/" in part and len(out) >= 2:
            out.extend(int(p) if p.isdigit() else p for p in part.split("/"))
        else:
            out.append(part)
    return out


def same_validation_message(coglet_msg: str, modelyard_msg: str) -> bool:
    """Whether two 422 messages say the same thing.

    The same facts in two wordings: coglet (Rust ``jsonschema``) quotes values as JSON
    (``"abc"``, ``null``, ``["a","b"]``) and says ``is longer than 10 characters``; Modelyard
    (Python ``jsonschema`` wording) uses Python's repr (``'abc'``, ``None``, ``['a', 'b']``) and says
    ``is too long``. Limits: the schema (Cog 0.16 style) holds ``10.0``, which coglet prints as
    ``10.0`` and Modelyard as ``10``.
    """
    return _canonical_message(coglet_msg) == _canonical_message(modelyard_msg)


def _canonical_message(msg: str) -> str:
    text = msg.replace("'", '"')
    text = re.sub(r"\bNone\b", "null", text)
    text = re.sub(r"\bTrue\b", "true", text)
    text = re.sub(r"\bFalse\b", "false", text)
    text = re.sub(r"(?<![\w.])(-?\d+)\.0\b", r"\1", text)
    text = re.sub(r",\s+", ",", text)
    text = re.sub(r":\s+", ":", text)
    text = re.sub(
        r" is (longer|shorter) than \d+ characters?$",
        lambda m: " is too long" if m.group(1) == "longer" else " is too short",
        text,
    )
    text = re.sub(
        r" has (more|less|fewer) than \d+ items?$",
        lambda m: " is too long" if m.group(1) == "more" else " is too short",
        text,
    )
    text = text.replace(
        ' is not valid under any of the schemas listed in the "anyOf" keyword',
        " is not valid under any of the given schemas",
    )
    return text


def validated_before_setup(cog: Outcome, mine: Outcome) -> bool:
    """After a failed setup coglet answers 503 before looking at the input; Modelyard validates
    the input first (a 422 needs no worker), then reports the setup failure."""
    return cog.kind == "setup_failed" and mine.kind == "invalid"


def coglet_cannot_load_class_trainers(cog: Outcome, mine: Outcome) -> bool:
    """``train: "train.py:Trainer"`` naming a class with ``setup()``/``train()``: coglet 0.23.1
    looks for ``run``/``predict`` on it and fails setup ("run or predict method not found");
    Modelyard (like Cog 0.16) calls ``train()``."""
    return (
        cog.kind == "setup_failed"
        and "run or predict method not found" in (cog.error or "")
        and mine.kind == "prediction"
        and mine.status == "succeeded"
    )


def coglet_setup_failure_error(health: dict[str, Any]) -> str:
    """The message of a failed ``setup()`` as coglet reports it in ``/health-check``.

    coglet answers every prediction with 503 after a failed setup, and puts the exception at the
    end of ``setup.logs`` (``worker setup failed: … Setup failed: setup failed: RuntimeError: x``).
    Modelyard fails the prediction with ``setup failed: x`` (and tries setup again for the next).
    """
    logs = (health.get("setup") or {}).get("logs") or ""
    last = logs.strip().splitlines()[-1] if logs.strip() else ""
    last = re.split(r"(?i)setup failed: ", last)[-1]
    return "setup failed: " + (normalise_coglet_error(last) or "")


def coglet_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """coglet's ``metrics`` without ``predict_time``: Modelyard's ``Done`` carries it apart
    (``Done.predict_time``); the API layer puts it back into ``metrics``."""
    return {k: v for k, v in (metrics or {}).items() if k != "predict_time"}


# =============================================================================================
# Outcomes of one input on each side
# =============================================================================================


@dataclass(frozen=True)
class FileValue:
    """A file in an output, compared by content (coglet: a data URI; Modelyard: a local file).

    The MIME type is informative only: Modelyard's runtime hands files to the API layer, which
    chooses how to serve them.
    """

    data: bytes
    mime: str = field(default="", compare=False)


def comparable(value: Any) -> Any:
    """An output with files replaced by FileValue, on either side."""
    if isinstance(value, OutputFile):
        if not value.path.is_file():
            return f"<missing output file {value.path}>"
        mime = mimetypes.guess_type(value.path.name)[0] or "application/octet-stream"
        return FileValue(value.path.read_bytes(), mime)
    if isinstance(value, str) and value.startswith("data:") and ";base64," in value[:200]:
        header, _, payload = value.partition(",")
        return FileValue(base64.b64decode(payload), header[5:].split(";")[0])
    if isinstance(value, list):
        return [comparable(v) for v in value]
    if isinstance(value, dict):
        return {k: comparable(v) for k, v in value.items()}
    return value


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


async def _collect(model: LocalModel, inputs: dict[str, Any], **kwargs: Any) -> list[Any]:
    events = []
    async for event in model.predict(inputs, **kwargs):
        events.append(event)
    return events


def modelyard_outcome(
    loop: EventLoopThread, model: LocalModel, payload: Any, context: dict[str, str] | None = None
) -> Outcome:
    try:
        inputs = model.validate(payload)
    except InputValidationError as exc:
        return Outcome("invalid", detail=exc.detail(), raw=exc)
    events = loop.run(_collect(model, inputs, context=context))
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


# =============================================================================================
# One coglet server and one Modelyard model per package
# =============================================================================================


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


@pytest.fixture(scope="module")
def loop() -> Any:
    thread = EventLoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def builder() -> EnvironmentBuilder:
    # The default cache ($MODELYARD_HOME/envs): the fixtures share one or two environments.
    return EnvironmentBuilder()


@pytest.fixture(scope="module")
def pair(
    request: pytest.FixtureRequest,
    loop: EventLoopThread,
    builder: EnvironmentBuilder,
    tmp_path_factory: pytest.TempPathFactory,
) -> Any:
    package: Package = request.param
    path = package.path
    if path is None:
        path = write_inline(package.name, tmp_path_factory.mktemp(package.name))
    started = Pair(path, package.mode, builder, loop)
    yield started
    started.stop()


# =============================================================================================
# The comparison
# =============================================================================================


def one_error_per_wrong_type(errors: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """422 errors grouped by ``loc`` (order-free: coglet sorts them, Modelyard keeps the schema's).

    A value of the wrong type fails more than one keyword: coglet (a JSON Schema validator)
    reports each (``"2" is not one of [1,2,3]`` and ``"2" is not of type "integer"``); Modelyard
    reports the type error alone. So each side must have the same locs with the same types, and
    every Modelyard message must say what one of coglet's messages at that loc says.
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for error in errors:
        grouped.setdefault(json.dumps(error["loc"]), []).append(error)
    return grouped


def assert_same_validation(coglet: list[dict[str, Any]], modelyard: list[dict[str, Any]]) -> None:
    """Same errors: ``loc`` and ``type`` exactly (after coglet_loc), ``msg`` by meaning."""
    cog = one_error_per_wrong_type([{**e, "loc": coglet_loc(e["loc"])} for e in coglet])
    mine = one_error_per_wrong_type(modelyard)
    summary = f"422 details differ:\n  coglet:    {coglet}\n  modelyard: {modelyard}"
    assert sorted(mine) == sorted(cog), summary
    for loc, errors in mine.items():
        assert {e["type"] for e in errors} == {e["type"] for e in cog[loc]}, summary
        for error in errors:
            assert any(same_validation_message(c["msg"], error["msg"]) for c in cog[loc]), (
                f"422 message for {loc} differs: coglet {[c['msg'] for c in cog[loc]]}, "
                f"modelyard {error['msg']!r}"
            )


def assert_same(cog: Outcome, mine: Outcome, exact_output: bool = True) -> None:
    """The two sides did the same with one input (modulo the documented differences).

    ``exact_output=False`` for outputs that cannot be equal (a process id, timings): then only
    their JSON types are compared.
    """
    if validated_before_setup(cog, mine) or coglet_cannot_load_class_trainers(cog, mine):
        return
    if cog.kind == "setup_failed":
        assert mine.kind == "prediction" and mine.status == "failed", mine
        assert mine.error == cog.error, (cog.error, mine.error)
        return
    assert cog.kind != "busy", f"coglet refused the prediction as busy: {cog.raw}"
    assert mine.kind == cog.kind, (
        f"coglet: {cog.kind} {cog.raw!r}\nmodelyard: {mine.kind} {mine.raw!r}"
    )
    if cog.kind == "invalid":
        assert_same_validation(cog.detail, mine.detail)
        return
    assert mine.status == cog.status, (
        f"status: coglet {cog.status} ({cog.error}), modelyard {mine.status} ({mine.error})"
    )
    if exact_output or cog.status != "succeeded":
        assert mine.output == cog.output, (
            f"output: coglet {cog.output!r}, modelyard {mine.output!r}"
        )
    else:
        assert type(mine.output) is type(cog.output), (cog.output, mine.output)
    assert mine.metrics == cog.metrics, f"metrics: coglet {cog.metrics}, modelyard {mine.metrics}"
    if cog.status == "succeeded":
        assert mine.error is None and cog.error is None
        my_logs = coglet_holds_back_unterminated_line(cog.logs, mine.logs)
        coglet_logs_without_fd_output(cog.logs, my_logs, cog.fd_output)
    else:
        assert same_error(cog.error, mine.error), (
            f"error: coglet {cog.error!r}, modelyard {mine.error!r}"
        )
        coglet_logs_on_failure(cog.logs, mine.logs)


#: cases.json keys this comparison understands; a compared case using another key fails.
CASE_KEYS = {
    "name",
    "input",
    "status",
    "output",
    "error_contains",
    "logs_contains",
    "logs_excludes",
    "metrics",
    "context",
    "mode",
    "files",
    "compare_with_coglet",
    "note",
}


def substitute(value: Any, http_base: str) -> Any:
    """cases.json's ``{{HTTP}}``: the base URL of a local server of tests/fixtures/."""
    if isinstance(value, str):
        return value.replace("{{HTTP}}", http_base)
    if isinstance(value, list):
        return [substitute(v, http_base) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, http_base) for k, v in value.items()}
    return value


def _strings(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def assert_case_expectations(case: dict[str, Any], cog: Outcome, mine: Outcome) -> None:
    """What cases.json says, checked on Modelyard's answer (and on coglet's where it applies)."""
    expected = case.get("status")
    if expected in PREDICTION_STATUSES:
        assert mine.kind == "prediction" and mine.status == expected, (expected, mine)
    if "output" in case and mine.kind == "prediction":
        assert mine.output == comparable(case["output"]), (case["output"], mine.output)
    if "error_contains" in case:
        text = mine.error if mine.kind == "prediction" else json.dumps(mine.detail)
        for needle in _strings(case["error_contains"]):
            assert needle in (text or ""), (needle, text)
    for needle in _strings(case.get("logs_contains", ())):
        assert needle in mine.logs, (needle, mine.logs)
        if (
            cog.kind == "prediction" and cog.status == "succeeded"
        ):  # see coglet_logs_without_fd_output
            assert needle in cog.logs or any(needle in line for line in cog.fd_output()), (
                needle,
                cog.logs,
                cog.fd_output(),
            )
    for needle in _strings(case.get("logs_excludes", ())):
        assert needle not in mine.logs, (needle, mine.logs)
        assert needle not in cog.logs, (needle, cog.logs)
    for name, value in (case.get("metrics") or {}).items():
        assert mine.metrics.get(name) == value, (name, value, mine.metrics)
    if "files" in case:
        expected = [text.encode("utf-8") for text in case["files"]]
        assert [f.data for f in _files(mine.output)] == expected, (case["files"], mine.output)


def _files(value: Any) -> list[FileValue]:
    if isinstance(value, FileValue):
        return [value]
    if isinstance(value, list):
        return [f for v in value for f in _files(v)]
    if isinstance(value, dict):
        return [f for v in value.values() for f in _files(v)]
    return []


# =============================================================================================
# Cases: tests/fixtures/*/cases.json, collected at import time, and the inline packages
# =============================================================================================


def fixture_params(fixtures: Path = FIXTURES) -> list[Any]:
    params: list[Any] = []
    folders = sorted(p for p in fixtures.iterdir() if p.is_dir()) if fixtures.is_dir() else []
    for folder in folders:
        if folder.name.startswith((".", "_")) or not (folder / "cog.yaml").is_file():
            continue
        cases_file = folder / "cases.json"
        package = Package(folder.name, folder)
        if not cases_file.is_file():
            reason = f"tests/fixtures/{folder.name} has no cases.json"
            params.append(
                pytest.param(package, None, id=folder.name, marks=pytest.mark.skip(reason=reason))
            )
            continue
        try:
            cases = json.loads(cases_file.read_text())
        except ValueError as exc:
            broken = {"name": "cases.json", "broken": f"{cases_file}: {exc}"}
            params.append(pytest.param(package, broken, id=f"{folder.name}/cases.json"))
            continue
        # Cases with file outputs are marked not comparable ("coglet answers a data URI"), but
        # data URIs and OutputFiles are compared here by content (FileValue): replay them too.
        compared = [c for c in cases if c.get("compare_with_coglet") or _only_files_differ(c)]
        if not compared:
            reason = f"tests/fixtures/{folder.name}: no case has compare_with_coglet: true"
            params.append(
                pytest.param(package, None, id=folder.name, marks=pytest.mark.skip(reason=reason))
            )
        for case in compared:
            mode = case.get("mode", "predict")
            params.append(
                pytest.param(
                    Package(folder.name, folder, mode), case, id=f"{folder.name}/{case['name']}"
                )
            )
    return params


def _only_files_differ(case: dict[str, Any]) -> bool:
    return "files" in case and not set(case) - CASE_KEYS


FIXTURE_PARAMS = fixture_params()


@pytest.mark.parametrize(
    "pair, case",
    FIXTURE_PARAMS
    or [
        pytest.param(
            None, None, marks=pytest.mark.skip(reason="no tests/fixtures/*/cases.json yet")
        )
    ],
    indirect=["pair"],
)
def test_fixture_case(pair: Pair, case: dict[str, Any], http_server: str) -> None:
    """Every fixture case marked compare_with_coglet: same status, output, error, logs, 422s."""
    if "broken" in case:
        pytest.fail(case["broken"])
    unknown = set(case) - CASE_KEYS
    if unknown:  # as tests/fixtures/README.md asks of a replayer that lacks an extension
        pytest.skip(f"the differential comparison does not support {sorted(unknown)}")
    cog, mine = pair.both(substitute(case.get("input"), http_server), case.get("context"))
    # A succeeded case without "output" has one that differs per run (a pid, timings).
    assert_same(cog, mine, exact_output="output" in case)
    assert_case_expectations(case, cog, mine)


# --- inline packages ---------------------------------------------------------------------------

COG_YAML = 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'

INLINE: dict[str, dict[str, str]] = {
    # Scalars, constraints, choices, lists, optionals, secrets; logs; exceptions; sys.exit.
    "diff_basic": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            import sys
            from typing import List, Optional
            from cog import BasePredictor, Input, Secret

            class Predictor(BasePredictor):
                def predict(
                    self,
                    text: str = Input(default="world", max_length=10),
                    n: int = Input(default=1, ge=1, le=10),
                    scale: float = Input(default=1.5, ge=0.0),
                    flag: bool = False,
                    color: str = Input(default="red", choices=["red", "green"]),
                    maybe: Optional[str] = Input(default=None),
                    nums: List[int] = Input(default=[1, 2]),
                    token: Secret = Input(default=None),
                    mode: str = "ok",
                ) -> str:
                    print("predicting", text)
                    print("to stderr", file=sys.stderr)
                    if mode == "raise":
                        raise ValueError("this is a value error")
                    if mode == "empty":
                        raise RuntimeError()
                    if mode == "exit":
                        sys.exit(3)
                    secret = token.get_secret_value() if token is not None else None
                    return f"{text}|{n!r}|{scale!r}|{flag}|{color}|{maybe}|{nums}|{secret}"
        """,
    },
    # A required input, an iterator output, a failure in the middle of the stream.
    "diff_stream": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            from typing import Iterator
            from cog import BasePredictor

            class Predictor(BasePredictor):
                def predict(self, n: int, fail_at: int = -1) -> Iterator[str]:
                    for i in range(n):
                        if i == fail_at:
                            raise ValueError(f"failed at {i}")
                        print(f"item {i}")
                        yield f"chunk{i}"
        """,
    },
    # Files in, files out, a model output, metrics.
    "diff_files": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            import tempfile
            from typing import List
            from cog import BaseModel, BasePredictor, Input, Path, current_scope

            class Result(BaseModel):
                files: List[Path]
                size: int

            class Predictor(BasePredictor):
                def predict(self, f: Path = Input(default=None), count: int = 2,
                            ext: str = ".txt") -> Result:
                    folder = Path(tempfile.mkdtemp())
                    scope = current_scope()
                    scope.record_metric("count", count)
                    scope.record_metric("calls", 1, mode="incr")
                    scope.record_metric("calls", 1, mode="incr")
                    scope.record_metric("image.ext", ext)
                    if f is not None:
                        data = f.read_bytes()
                        (folder / ("echo" + ext)).write_bytes(data[::-1])
                        return Result(files=[folder / ("echo" + ext)], size=len(data))
                    files = []
                    for i in range(count):
                        (folder / f"out{i}{ext}").write_text(f"file {i}")
                        files.append(folder / f"out{i}{ext}")
                    if count == 13:
                        scope.record_metric("predict_time", 1.0)
                    return Result(files=files, size=0)
        """,
    },
    # Outputs at the edges of JSON, log lines without newlines, unions, regexes, dict inputs.
    "diff_outputs": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            import sys
            from typing import Any, List, Optional, Union
            from cog import BasePredictor, Input, Path

            class Predictor(BasePredictor):
                def predict(
                    self,
                    what: str = "ok",
                    level: int = Input(default=1, choices=[1, 2, 3]),
                    code: str = Input(default="ab", regex=r"^[a-z]+$"),
                    tags: List[str] = Input(default=["x"], min_length=1),
                    both: Union[int, str] = Input(default=1),
                    maybe_n: Optional[int] = Input(default=None),
                    blob: dict = Input(default={"a": 1}),
                ) -> Any:
                    if what == "echo":
                        return [level, code, tags, both, maybe_n, blob]
                    if what == "none":
                        return None
                    if what == "tuple":
                        return (1, "two")
                    if what == "bytes":
                        return b"abc"
                    if what == "set":
                        return {1}
                    if what == "nan":
                        return float("nan")
                    if what == "bigint":
                        return 2**70
                    if what == "missing_file":
                        return Path("/nonexistent/output.txt")
                    if what == "partial_lines":
                        print("no newline", end="")
                        sys.stdout.write("x\\rprogress 50%\\rprogress 100%\\n")
                        print("tail without newline", end="")
                        return "p"
                    if what == "profiled":  # what cProfile, coverage or a debugger does
                        sys.setprofile(lambda *args: None)
                        try:
                            return sum(len(str(i)) for i in range(100))
                        finally:
                            sys.setprofile(None)
                    if what == "hello":
                        print("hello")
                        return "h"
                    if what == "unicode_error":
                        print("héllo ✓ 日本")
                        raise ValueError("naïve ✗\\nsecond line")
                    if what == "exception_object":
                        raise Exception({"k": 1})
                    return what
        """,
    },
    # The worker dies in the middle of a prediction.
    "diff_crash": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            import os
            from cog import BasePredictor

            class Predictor(BasePredictor):
                def predict(self, crash: bool = False) -> str:
                    print("crash" if crash else "fine", flush=True)
                    if crash:
                        os._exit(7)
                    return "alive"
        """,
    },
    # setup() raises.
    "diff_setup_failure": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            from cog import BasePredictor

            class Predictor(BasePredictor):
                def setup(self):
                    print("loading")
                    raise RuntimeError("setup exploded")

                def predict(self, x: int = 1) -> int:
                    return x
        """,
    },
    # Two slots; a prediction holds its slot until a file appears (no timing involved).
    "diff_busy": {
        "cog.yaml": COG_YAML + "concurrency:\n  max: 2\n",
        "predict.py": """
            import asyncio, os
            from cog import BasePredictor

            class Predictor(BasePredictor):
                async def predict(self, gate: str = "", name: str = "x") -> str:
                    while gate and not os.path.exists(gate):
                        await asyncio.sleep(0.01)
                    return name
        """,
    },
    # Training with a function.
    "diff_train": {
        "cog.yaml": COG_YAML + 'train: "train.py:train"\n',
        "predict.py": """
            from cog import BasePredictor

            class Predictor(BasePredictor):
                def predict(self) -> str:
                    return "p"
        """,
        "train.py": """
            from cog import Input

            def train(steps: int = Input(default=2, ge=1), name: str = "w") -> str:
                print("training", steps)
                return f"{name}-{steps}"
        """,
    },
}


def write_inline(name: str, folder: Path) -> Path:
    for filename, text in INLINE[name].items():
        (folder / filename).write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def inline(name: str, mode: str = "predict") -> list[Package]:
    return [Package(name, None, mode)]


INLINE_CASES = [
    *[
        pytest.param(Package("diff_basic"), i, id=f"diff_basic/{name}")
        for name, i in [
            ("defaults", {}),
            ("null_input", None),
            (
                "values",
                {
                    "text": "cog",
                    "n": 3,
                    "scale": 0.25,
                    "flag": True,
                    "color": "green",
                    "nums": [5],
                    "token": "s3cret",
                },
            ),
            ("unknown_field_dropped", {"text": "a", "zzz": 1}),
            ("too_long", {"text": "abcdefghijklmnop"}),
            ("above_max_and_wrong_type", {"text": 3, "n": 11}),
            ("below_min", {"n": 0, "scale": -1}),
            ("not_a_choice", {"color": "blue"}),
            ("bool_is_strict", {"flag": 1}),
            ("int_rejects_fraction", {"n": 2.5}),
            ("null_for_required_type", {"text": None}),
            ("null_secret", {"token": None}),
            ("list_item_wrong_type", {"nums": [1, "a"]}),
            ("list_not_list", {"nums": 3}),
            ("raise", {"mode": "raise"}),
            ("raise_empty_message", {"mode": "empty"}),
            ("sys_exit", {"mode": "exit"}),
            ("after_failures", {"text": "again"}),
        ]
    ],
    *[
        pytest.param(Package("diff_stream"), i, id=f"diff_stream/{name}")
        for name, i in [
            ("three", {"n": 3}),
            ("empty", {"n": 0}),
            ("missing_required", {}),
            ("fails_midway", {"n": 3, "fail_at": 1}),
        ]
    ],
    *[
        pytest.param(Package("diff_files"), i, id=f"diff_files/{name}")
        for name, i in [
            ("two_text_files", {}),
            ("png_name", {"count": 1, "ext": ".png"}),
            ("unknown_extension", {"count": 1, "ext": ".weird"}),
            ("data_uri_input", {"f": "data:text/plain;base64,aGVsbG8="}),
            ("reserved_metric", {"count": 13}),
        ]
    ],
    *[
        pytest.param(Package("diff_outputs"), i, id=f"diff_outputs/{name}")
        for name, i in [
            (
                "echo",
                {
                    "what": "echo",
                    "level": 2,
                    "code": "zz",
                    "tags": ["a", "b"],
                    "both": "s",
                    "maybe_n": 3,
                    "blob": {"q": [1]},
                },
            ),
            ("none", {"what": "none"}),
            ("tuple", {"what": "tuple"}),
            ("bytes", {"what": "bytes"}),
            ("partial_lines", {"what": "partial_lines"}),
            ("unicode_error", {"what": "unicode_error"}),
            ("exception_object", {"what": "exception_object"}),
            ("int_not_a_choice", {"level": 4}),
            ("string_for_int_choice", {"level": "2"}),
            ("regex", {"code": "AB"}),
            ("list_too_short", {"tags": []}),
            ("union_float", {"both": 1.5}),
            ("union_list", {"both": [1]}),
            ("optional_wrong_type", {"maybe_n": "x"}),
            ("dict_given_list", {"blob": [1]}),
        ]
    ],
    pytest.param(Package("diff_crash"), {}, id="diff_crash/fine"),
    pytest.param(Package("diff_setup_failure"), {}, id="diff_setup_failure/predict"),
    pytest.param(Package("diff_setup_failure"), {"x": "a"}, id="diff_setup_failure/invalid"),
    pytest.param(Package("diff_busy"), {"name": "q"}, id="diff_busy/one"),
    pytest.param(Package("diff_train", mode="train"), {}, id="diff_train/defaults"),
    pytest.param(Package("diff_train", mode="train"), {"steps": 0}, id="diff_train/below_min"),
    pytest.param(
        Package("diff_train", mode="train"), {"steps": 5, "name": "z"}, id="diff_train/values"
    ),
]


@pytest.mark.parametrize("pair, payload", INLINE_CASES, indirect=["pair"])
def test_inline_case(pair: Pair, payload: Any) -> None:
    """The inline packages' inputs: the same comparison as for the fixtures."""
    cog, mine = pair.both(payload)
    assert_same(cog, mine)


# --- each documented difference, pinned on both sides ------------------------------------------


@pytest.mark.parametrize("pair", inline("diff_basic"), indirect=True)
def test_failed_prediction_error_and_logs(pair: Pair) -> None:
    cog, mine = pair.both({"mode": "raise"})
    assert cog.error == "Prediction failed: Prediction failed: ValueError: this is a value error"
    assert cog.logs == ""
    assert mine.error == "this is a value error"
    assert mine.logs.startswith("predicting world\nto stderr\n")
    assert "Traceback (most recent call last)" in mine.logs
    assert "ValueError: this is a value error" in mine.logs


@pytest.mark.parametrize("pair", inline("diff_basic"), indirect=True)
def test_optional_input_accepts_explicit_null(pair: Pair) -> None:
    cog, mine = pair.both({"maybe": None})
    assert cog.kind == "invalid"
    assert [coglet_loc(e["loc"]) for e in cog.detail] == [["body", "input", "maybe"]]
    assert mine.kind == "prediction" and mine.status == "succeeded"
    assert mine.output == "world|1|1.5|False|red|None|[1, 2]|None"


@pytest.mark.parametrize("pair", inline("diff_basic"), indirect=True)
def test_numbers_are_coerced_to_the_annotated_type(pair: Pair) -> None:
    payload = {"n": 2.0, "scale": 1}
    cog = coglet_outcome(pair.coglet, payload)
    mine = modelyard_outcome(pair.loop, pair.model, payload)
    assert cog.output == "world|2.0|1|False|red|None|[1, 2]|None"  # coglet passes JSON through
    assert mine.output == "world|2|1.0|False|red|None|[1, 2]|None"  # int is int, float is float


@pytest.mark.parametrize("pair", inline("diff_basic"), indirect=True)
def test_validation_loc_of_nested_values(pair: Pair) -> None:
    cog, mine = pair.both({"nums": [1, "a"]})
    assert [e["loc"] for e in cog.detail] == [["body", "input", "nums/1"]]
    assert [e["loc"] for e in mine.detail] == [["body", "input", "nums", 1]]
    cog, mine = pair.both([1])
    assert [e["loc"] for e in cog.detail] == [["body", "input", "__root__"]]
    assert [e["loc"] for e in mine.detail] == [["body", "input"]]


@pytest.mark.parametrize("pair", inline("diff_basic"), indirect=True)
def test_validation_messages_wording(pair: Pair) -> None:
    cog, mine = pair.both({"text": "abcdefghijklmnop", "color": "blue", "n": 11})
    by_field = {e["loc"][-1]: e["msg"] for e in cog.detail}
    assert by_field == {
        "text": '"abcdefghijklmnop" is longer than 10 characters',
        "color": '"blue" is not one of ["red","green"]',
        "n": "11 is greater than the maximum of 10.0",
    }
    mine_by_field = {e["loc"][-1]: e["msg"] for e in mine.detail}
    assert mine_by_field == {
        "text": "'abcdefghijklmnop' is too long",
        "color": "'blue' is not one of ['red', 'green']",
        "n": "11 is greater than the maximum of 10",
    }


@pytest.mark.parametrize("pair", inline("diff_crash"), indirect=True)
def test_worker_crash(pair: Pair) -> None:
    pid_before = pair.model.runner.pid
    cog, mine = pair.both({"crash": True})
    assert (cog.status, cog.error) == ("failed", "Worker crashed")
    assert mine.status == "failed"
    assert mine.error == "The worker process died: exited with code 7"
    assert "crash\n" in mine.logs  # what it printed before dying is kept
    # coglet: unhealthy, every later prediction is refused; Modelyard: a new worker takes over.
    assert pair.coglet.get_health()["status"] == "UNHEALTHY"
    assert pair.coglet.post_prediction({}, retry_409=0).status_code == 409
    again = modelyard_outcome(pair.loop, pair.model, {})
    assert (again.status, again.output) == ("succeeded", "alive")
    assert pair.model.runner.pid != pid_before


@pytest.mark.parametrize("pair", inline("diff_setup_failure"), indirect=True)
def test_setup_failure(pair: Pair) -> None:
    health = pair.coglet.get_health()
    assert health["status"] == "SETUP_FAILED"
    assert health["setup"]["status"] == "failed"
    assert health["setup"]["logs"].endswith("RuntimeError: setup exploded")
    assert pair.setup_error == "setup exploded"
    setup = pair.model.runner.setup_result
    assert setup.status == "failed" and setup.logs.startswith("loading\n")
    assert "RuntimeError: setup exploded" in setup.logs  # coglet keeps only the error
    response = pair.coglet.post_prediction({})
    assert response.status_code == 503
    mine = modelyard_outcome(pair.loop, pair.model, {})
    assert (mine.status, mine.error) == ("failed", "setup failed: setup exploded")


@pytest.mark.parametrize("pair", inline("diff_busy"), indirect=True)
def test_busy_slots_queue_instead_of_409(pair: Pair, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    payload = {"gate": str(gate), "name": "held"}
    inputs = pair.model.validate(payload)
    with ThreadPoolExecutor(4) as pool:
        # coglet: two predictions hold both slots; a third is refused at once.
        held = [pool.submit(pair.coglet.post_prediction, payload, retry_409=0) for _ in range(2)]
        _wait_for(lambda: pair.coglet.get_health()["status"] == "BUSY")
        refused = pair.coglet.post_prediction({"name": "third"}, retry_409=0)
        assert refused.status_code == 409
        assert refused.json() == {
            "error": "At capacity - all prediction slots busy",
            "status": "failed",
        }
        # Modelyard: the third waits for a slot and runs.
        mine = [
            asyncio.run_coroutine_threadsafe(_collect(pair.model, inputs), pair.loop.loop)
            for _ in range(2)
        ]
        _wait_for(lambda: pair.model.runner.state == "BUSY")
        third = asyncio.run_coroutine_threadsafe(
            _collect(pair.model, pair.model.validate({"name": "third"})), pair.loop.loop
        )
        assert not third.done()
        gate.write_text("open")
        assert [f.result(CASE_TIMEOUT).json()["output"] for f in held] == ["held", "held"]
        assert [f.result(CASE_TIMEOUT)[-1].output for f in mine] == ["held", "held"]
        assert third.result(CASE_TIMEOUT)[-1].output == "third"


def _wait_for(condition: Any, timeout: float = 30.0) -> None:
    """Poll a condition (a bound, not an assertion on time)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


@pytest.mark.parametrize("pair", inline("diff_outputs"), indirect=True)
def test_unterminated_last_log_line(pair: Pair) -> None:
    pair.ensure_coglet_usable()
    first = coglet_outcome(pair.coglet, {"what": "partial_lines"})
    second = coglet_outcome(pair.coglet, {"what": "hello"})
    assert first.logs == "no newlinex\rprogress 50%\rprogress 100%\n"
    assert second.logs == "tail without newlinehello\n"  # leaked into the next prediction
    mine = modelyard_outcome(pair.loop, pair.model, {"what": "partial_lines"})
    assert mine.logs == "no newlinex\rprogress 50%\rprogress 100%\ntail without newline"
    assert modelyard_outcome(pair.loop, pair.model, {"what": "hello"}).logs == "hello\n"


@pytest.mark.parametrize("pair", inline("diff_outputs"), indirect=True)
def test_big_integers_stay_exact(pair: Pair) -> None:
    cog, mine = pair.both({"what": "bigint"})
    assert cog.output == 1.1805916207174112e21  # coglet: through an f64
    assert mine.output == 2**70


# --- bugs this comparison found, fixed in 7554514 (kept as regression tests) ---------------------


@pytest.mark.parametrize("pair", inline("diff_outputs"), indirect=True)
def test_nan_output_fails(pair: Pair) -> None:
    cog, mine = pair.both({"what": "nan"})
    assert cog.status == "failed"  # "Failed to parse output JSON"
    assert mine.status == "failed", f"succeeded with output {mine.output!r}"
    assert "JSON" in (mine.error or "")


@pytest.mark.parametrize("pair", inline("diff_outputs"), indirect=True)
def test_set_output_is_a_list(pair: Pair) -> None:
    cog, mine = pair.both({"what": "set"})
    assert (cog.status, cog.output) == ("succeeded", [1])
    assert (mine.status, mine.output) == ("succeeded", [1]), mine.error


@pytest.mark.parametrize("pair", inline("diff_outputs"), indirect=True)
def test_missing_output_file_fails_clearly(pair: Pair) -> None:
    cog, mine = pair.both({"what": "missing_file"})
    assert (cog.status, cog.output) == ("succeeded", None)  # coglet silently answers null
    assert mine.status == "failed", f"{mine.status} with output {mine.output!r}"
    assert "/nonexistent/output.txt" in (mine.error or "")


@pytest.mark.parametrize("pair", inline("diff_outputs"), indirect=True)
def test_model_may_install_a_profiler(pair: Pair) -> None:
    pair.ensure_coglet_usable()
    cog = coglet_outcome(pair.coglet, {"what": "profiled"})
    assert (cog.status, cog.output) == ("succeeded", 190)
    first = modelyard_outcome(pair.loop, pair.model, {"what": "hello"})
    assert first.status == "succeeded"
    inputs = pair.model.validate({"what": "profiled"})
    # Bounded: with the bug the worker never answers; the runner cancels, then kills it.
    events = pair.loop.run(_collect(pair.model, inputs, timeout=5))
    assert (events[-1].status, events[-1].output) == ("succeeded", 190), events[-1]
