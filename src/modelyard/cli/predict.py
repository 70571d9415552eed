"""`modelyard predict DIR -i name=value ...`: run one prediction of a Cog package locally."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.cogspec.config import CogConfig
from modelyard.cogspec.inputs import file_fields
from modelyard.runtime.downloads import localize_files
from modelyard.runtime.events import Done, Event, Log, Metric, Output
from modelyard.runtime.local import LocalModel
from modelyard.runtime.runner import Mode

from .inputs import parse_input_options
from .outputs import has_files, save_files


@dataclass
class PredictOptions:
    package_dir: Path
    inputs: list[str]
    as_json: bool = False
    output_dir: Path = field(default_factory=Path.cwd)
    mode: Mode = "predict"
    setup_timeout: float | None = None
    timeout: float | None = None
    weights: str | None = None


def stderr(line: str) -> None:
    sys.stderr.write(line if line.endswith("\n") else line + "\n")
    sys.stderr.flush()


class Interrupted(Exception):
    """SIGINT/SIGTERM outside a running prediction, or a second one: the model was stopped."""

    def __str__(self) -> str:
        return "interrupted"


class _BuildInterrupted(BaseException):
    """Raised in the environment build's thread (from its progress callback) to stop the build:
    the step that is running kills its child and the builder removes the half-built environment."""


def warn_ignored_keys(config: CogConfig) -> None:
    """One warning line on stderr per cog.yaml key that Cog no longer uses."""
    for key in config.ignored_keys:
        stderr(f"warning: cog.yaml: {key!r} is no longer used by Cog and is ignored")


def run_predict(options: PredictOptions) -> int:
    """Run the prediction and print it; returns the process exit code.

    Raises `Interrupted` when stopped by a signal (see `_Interrupts`).
    """
    model = LocalModel(
        options.package_dir,
        mode=options.mode,
        setup_timeout=options.setup_timeout,
        weights=options.weights,
        allow_local_paths=True,
        sandbox=None,  # where bubblewrap works (docs/security.md)
    )
    warn_ignored_keys(model.config)
    payload = parse_input_options(options.inputs, model.schema, model.component)
    inputs = model.validate(payload)
    options.output_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="modelyard-cli-"))
    try:
        return asyncio.run(_predict(model, inputs, options, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _Interrupts:
    """What SIGINT and SIGTERM do: the first one while a prediction runs cancels it; a second one,
    or one at any other time (fetching inputs, building the environment, setup), cancels the whole
    command, which then stops the model (killing the worker if it does not exit)."""

    def __init__(self, model: LocalModel, prediction_id: str) -> None:
        self.model = model
        self.prediction_id = prediction_id
        self.main = asyncio.current_task()
        self.predicting = False  # a prediction is running: the first signal cancels it
        self.cancel_sent = False
        self.interrupted = False  # the command was canceled by a signal
        self.stopping = False  # the model is being stopped: further signals change nothing
        self._pending: set[asyncio.Task[Any]] = set()

    def __call__(self) -> None:
        if self.stopping or self.interrupted:
            return
        if self.predicting and not self.cancel_sent:
            self.cancel_sent = True
            task = asyncio.ensure_future(self.model.cancel(self.prediction_id))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
            return
        self.interrupted = True
        assert self.main is not None
        self.main.cancel()

    def build_progress(self, line: str) -> None:
        """The build's progress callback (it runs in the build's thread)."""
        if self.interrupted:
            raise _BuildInterrupted()
        stderr(line)


async def _predict(
    model: LocalModel, inputs: dict[str, Any], options: PredictOptions, scratch: Path
) -> int:
    output_schema = model.schema["components"]["schemas"].get(
        "TrainingOutput" if options.mode == "train" else "Output", {}
    )
    concatenate = output_schema.get("x-cog-array-display") == "concatenate"
    prediction_id = uuid.uuid4().hex
    loop = asyncio.get_running_loop()
    interrupts = _Interrupts(model, prediction_id)
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, interrupts)
    logs: list[str] = []
    done = Done("failed", error="the prediction ended without a result")
    events: AsyncIterator[Event] | None = None
    try:
        # URL inputs are fetched before anything starts, so a bad one is a one-line error.
        inputs = await localize_files(
            inputs, file_fields(model.schema, model.component), scratch, allow_local_paths=True
        )
        stderr("Starting the model (building its environment if needed)...")
        await model.ensure_environment(progress=interrupts.build_progress)
        await model.start(progress=stderr)
        interrupts.predicting = True
        events = model.predict(inputs, prediction_id=prediction_id, timeout=options.timeout)
        async for event in events:
            if isinstance(event, Log):
                logs.append(event.text)
                if not options.as_json:
                    stderr(event.text)
            elif isinstance(event, Output) and not options.as_json:
                _print_item(event, options.output_dir, concatenate)
            elif isinstance(event, Metric):
                continue
            elif isinstance(event, Done):
                done = event
        interrupts.predicting = False
    except asyncio.CancelledError:
        if not interrupts.interrupted:
            raise
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
    finally:
        interrupts.stopping = True
        if events is not None and hasattr(events, "aclose"):
            await events.aclose()
        await model.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if interrupts.interrupted:
        raise Interrupted()
    return _report(done, logs, options, concatenate)


def _print_item(event: Output, directory: Path, concatenate: bool) -> None:
    value = save_files(event.value, directory, f"output.{event.index}")
    if concatenate and isinstance(value, str):
        sys.stdout.write(value)
    else:
        sys.stdout.write(_text(value) + "\n")
    sys.stdout.flush()


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=2, ensure_ascii=False)


def _report(done: Done, logs: list[str], options: PredictOptions, concatenate: bool) -> int:
    output = done.output
    if has_files(output) and not (done.is_stream and not options.as_json):
        written: list[Path] = []
        output = save_files(output, options.output_dir, written=written)
        if not options.as_json:
            for path in written:
                stderr(f"Written output to {path}")
    if options.as_json:
        document = {
            "status": done.status,
            "output": output,
            "error": done.error,
            "logs": "".join(logs),
            "metrics": {**done.metrics, "predict_time": done.predict_time},
        }
        sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    elif done.is_stream:
        if concatenate:
            sys.stdout.write("\n")
    elif done.status == "succeeded" and (
        not has_files(done.output) or isinstance(done.output, dict)
    ):
        # An object's other fields (a score beside its images) are output too: it is printed
        # with each file replaced by the path it was written to.
        sys.stdout.write(_text(output) + "\n")
    if done.status != "succeeded":
        stderr(f"Error: prediction {done.status}" + (f": {done.error}" if done.error else ""))
        return 1
    return 0
