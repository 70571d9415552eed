"""`modelyard record-example DIR`: run a catalog package's `example/input.json` for real and keep
what it gave (`example/output.json` and its files) and a cover image drawn from it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelyard.engine.examples import (
    FILE_MARK,
    ExampleError,
    example_dir,
    read_input,
    read_recorded,
    write_recorded,
)
from modelyard.runtime.events import Done, Log
from modelyard.runtime.local import LocalModel

from .covers import make_cover
from .outputs import save_files


@dataclass(frozen=True)
class Recorded:
    output_json: Path
    cover: Path
    predict_time: float | None


async def record_example(package: Path, say: Callable[[str], None]) -> Recorded:
    """Build and start the model, run its example input once, write the output and the cover."""
    model = LocalModel(package, allow_local_paths=True)
    fields = model.file_fields
    inputs = read_input(package, fields)
    if inputs is None:
        raise ExampleError(f"{example_dir(package) / 'input.json'} does not exist")
    validated = model.validate(inputs)
    say(f"Building the environment of {package.name} (if needed)...")
    await model.ensure_environment(progress=say)
    await model.start(progress=say)
    logs: list[str] = []
    done = Done("failed", error="the prediction ended without a result")
    try:
        async for event in model.predict(validated, prediction_id=uuid.uuid4().hex):
            if isinstance(event, Log):
                logs.append(event.text)
            elif isinstance(event, Done):
                done = event
    finally:
        await model.stop()
    if done.status != "succeeded":
        raise ExampleError(f"the example of {package.name} {done.status}: {done.error}")

    folder = example_dir(package)
    for old in folder.glob("output.*"):
        old.unlink()
    output = save_files(done.output, folder, render=lambda path: {FILE_MARK: path.name})
    output_json = write_recorded(package, output, "".join(logs), done.predict_time)
    recorded = read_recorded(package, fields)
    assert recorded is not None  # just written
    cover = make_cover(package, package.name, recorded.input, recorded.output)
    return Recorded(output_json=output_json, cover=cover, predict_time=done.predict_time)
