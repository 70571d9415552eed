"""`modelyard predict DIR -i name=value ...`: run one prediction of a Cog package locally."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.runtime.events import Done, Log, Metric, Output
from modelyard.runtime.local import LocalModel

from .inputs import parse_input_options
from .outputs import has_files, save_files


@dataclass
class PredictOptions:
    package_dir: Path
    inputs: list[str]
    as_json: bool = False
    output_dir: Path = field(default_factory=Path.cwd)
    mode: str = "predict"
    setup_timeout: float | None = None
    timeout: float | None = None
    weights: str | None = None


def stderr(line: str) -> None:
    sys.stderr.write(line if line.endswith("\n") else line + "\n")
    sys.stderr.flush()


def run_predict(options: PredictOptions) -> int:
    """Run the prediction and print it; returns the process exit code."""
    model = LocalModel(
        options.package_dir,
        mode=options.mode,
        setup_timeout=options.setup_timeout,
        weights=options.weights,
        allow_local_paths=True,
    )
    payload = parse_input_options(options.inputs, model.schema, model.component)
    inputs = model.validate(payload)
    options.output_dir.mkdir(parents=True, exist_ok=True)
    return asyncio.run(_predict(model, inputs, options))


async def _predict(model: LocalModel, inputs: dict[str, Any], options: PredictOptions) -> int:
    output_schema = model.schema["components"]["schemas"].get(
        "TrainingOutput" if options.mode == "train" else "Output", {}
    )
    concatenate = output_schema.get("x-cog-array-display") == "concatenate"
    prediction_id = uuid.uuid4().hex
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, lambda: asyncio.ensure_future(model.cancel(prediction_id)))
    logs: list[str] = []
    done = Done("failed", error="the prediction ended without a result")
    try:
        stderr("Starting the model (building its environment if needed)...")
        await model.start(progress=stderr)
        async for event in model.predict(inputs, prediction_id=prediction_id, timeout=options.timeout):
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
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await model.stop()
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
    elif done.status == "succeeded" and not has_files(done.output):
        sys.stdout.write(_text(output) + "\n")
    if done.status != "succeeded":
        stderr(f"Error: prediction {done.status}" + (f": {done.error}" if done.error else ""))
        return 1
    return 0
