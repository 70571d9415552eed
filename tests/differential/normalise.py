"""The documented differences between coglet 0.23.1 and Modelyard, each normalised in one place.

Every function here evens out one deliberate difference listed in ``docs/differences-from-cog.md``
(its docstring names the row); the comparison (``compare.py``) applies them and fails on anything
else. A new difference needs a row there and a function here, never an ad-hoc tweak in a test.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelyard.runtime.events import OutputFile

if TYPE_CHECKING:  # support.py imports this module; the annotation is all that is needed here
    from .support import Outcome


# --- outputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileValue:
    """A file in an output, compared by content (coglet: a data URI; Modelyard: a local file).

    The MIME type is informative only: Modelyard's runtime hands files to the API layer, which
    chooses how to serve them. Row "File outputs" of docs/differences-from-cog.md.
    """

    data: bytes
    mime: str = field(default="", compare=False)


def comparable(value: Any) -> Any:
    """An output with files replaced by FileValue, on either side.

    Row "File outputs" of docs/differences-from-cog.md.
    """
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


def coglet_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """coglet's ``metrics`` without ``predict_time``: Modelyard's ``Done`` carries it apart
    (``Done.predict_time``); the API layer puts it back into ``metrics``.

    Row "`predict_time`" of docs/differences-from-cog.md.
    """
    return {k: v for k, v in (metrics or {}).items() if k != "predict_time"}


# --- errors --------------------------------------------------------------------------------------


def normalise_coglet_error(error: str | None) -> str | None:
    """coglet's prediction error → the message Modelyard reports for the same exception.

    coglet wraps the exception as ``Prediction failed: Prediction failed: ValueError: boom``
    (the prefix doubled; ``Generator iteration error:`` for iterators, ``Async prediction failed:``
    for async ones). Modelyard reports the
    exception's message alone, as Cog 0.16 did, or the exception's type when the message is empty;
    for ``sys.exit(3)`` it says ``the model called sys.exit(3)``.

    Rows "Error of a failed prediction" and "`sys.exit(3)` in `predict()`" of
    docs/differences-from-cog.md.
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
#: Rows "Worker dies mid-prediction", "Invalid metric name" and "An output JSON cannot hold" of
#: docs/differences-from-cog.md.
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
    """Whether the two errors say the same, allowing only the documented wording differences
    (normalise_coglet_error, then KNOWN_ERROR_WORDINGS)."""
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


# --- logs ----------------------------------------------------------------------------------------


def coglet_logs_on_failure(coglet_logs: str, modelyard_logs: str) -> None:
    """coglet drops a failed or canceled prediction's logs from its sync answer (``"logs": ""``,
    hard-coded in its routes.rs); Modelyard keeps them, with the traceback.

    Row "Logs of a failed or canceled prediction" of docs/differences-from-cog.md.
    """
    assert coglet_logs == "", f"coglet kept logs of a failed prediction: {coglet_logs!r}"


def mask_temp_paths(logs: str) -> str:
    """Temporary paths differ per run and per server (coglet downloads a file input to
    ``/tmp/tmpXXXXfile.txt``, Modelyard to ``/tmp/modelyard-in-XXXX/0/file.txt``, keeping the name).

    Row "A file input (`cog.Path`)" of docs/differences-from-cog.md.
    """
    return re.sub(re.escape(tempfile.gettempdir()) + r"/[^\s'\"]*", "<tmp>", logs)


def coglet_logs_without_fd_output(
    coglet_logs: str, modelyard_logs: str, fd_output: Callable[[], list[str]]
) -> None:
    """The same logs, except what the model wrote straight to fds 1/2.

    coglet 0.23.1 leaves output of subprocesses and C code (``os.write(1, …)``, ``printf``) out of
    the prediction's ``logs`` and writes it to its own log (target ``coglet::user``); Modelyard
    captures it in the prediction's logs. So: coglet's lines must appear in Modelyard's, in order,
    and each extra line of Modelyard's must be one coglet diverted to its own log.

    Row "Output written straight to fds 1/2" of docs/differences-from-cog.md.
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

    Row "Last log line without a newline" of docs/differences-from-cog.md.
    """
    head, newline, tail = modelyard_logs.rpartition("\n")
    if not tail:
        return modelyard_logs
    assert not coglet_logs.endswith(tail), (coglet_logs, modelyard_logs)
    return head + newline


# --- inputs and 422s -----------------------------------------------------------------------------


def numbers_as_annotated(payload: Any, validated: dict[str, Any]) -> Any:
    """``payload`` with each number given the JSON type Modelyard hands to the predictor, or None.

    Modelyard passes an ``int`` input as int (``2.0`` → ``2``) and a ``float`` input as float
    (``2`` → ``2.0``), as pydantic did in Cog 0.16; coglet passes the JSON number as parsed, so
    an ``int`` parameter can receive ``2.0``. The comparison replays such inputs on coglet with the
    numbers converted; the raw input is still checked for the same validity.

    Row "A number whose JSON type differs from the annotation" of docs/differences-from-cog.md.
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

    Rows "422 `loc` of a nested value" and "422 `loc` when `input` is not an object" of
    docs/differences-from-cog.md.
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

    Row "422 `msg` wording" of docs/differences-from-cog.md.
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


def one_error_per_wrong_type(errors: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """422 errors grouped by ``loc`` (order-free: coglet sorts them, Modelyard keeps the schema's).

    A value of the wrong type fails more than one keyword: coglet (a JSON Schema validator)
    reports each (``"2" is not one of [1,2,3]`` and ``"2" is not of type "integer"``); Modelyard
    reports the type error alone. So each side must have the same locs with the same types, and
    every Modelyard message must say what one of coglet's messages at that loc says.

    Row "A value of the wrong type for a field with more rules" of docs/differences-from-cog.md.
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for error in errors:
        grouped.setdefault(json.dumps(error["loc"]), []).append(error)
    return grouped


# --- setup ---------------------------------------------------------------------------------------


def validated_before_setup(cog: Outcome, mine: Outcome) -> bool:
    """After a failed setup coglet answers 503 before looking at the input; Modelyard validates
    the input first (a 422 needs no worker), then reports the setup failure.

    Row "An invalid input after a failed setup" of docs/differences-from-cog.md.
    """
    return cog.kind == "setup_failed" and mine.kind == "invalid"


def coglet_cannot_load_class_trainers(cog: Outcome, mine: Outcome) -> bool:
    """``train: "train.py:Trainer"`` naming a class with ``setup()``/``train()``: coglet 0.23.1
    looks for ``run``/``predict`` on it and fails setup ("run or predict method not found");
    Modelyard (like Cog 0.16) calls ``train()``.

    Row "`train: "train.py:Trainer"` naming a class" of docs/differences-from-cog.md.
    """
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

    Row "`setup()` raised" of docs/differences-from-cog.md.
    """
    logs = (health.get("setup") or {}).get("logs") or ""
    last = logs.strip().splitlines()[-1] if logs.strip() else ""
    last = re.split(r"(?i)setup failed: ", last)[-1]
    return "setup failed: " + (normalise_coglet_error(last) or "")
