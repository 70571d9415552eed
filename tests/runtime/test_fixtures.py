"""The Cog fixtures of tests/fixtures/ run through LocalModel: real environments, real workers.

`test_case` replays every `cases.json` case. The other tests check what a case file cannot say:
event order, overlap of async predictions, cancel and crash recovery, setup failures and timeouts,
per-prediction log routing, output files, input clean-up and the 422 shape of invalid inputs.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import pytest
from fixture_support import (
    Result,
    all_cases,
    collect,
    file_contents,
    fixture_dir,
    fixture_names,
    load_cases,
    run_fixture,
    substitute,
)

from modelyard.cogspec.inputs import InputValidationError
from modelyard.runtime.events import Done, Log, Metric, Output, OutputFile, Started
from modelyard.runtime.local import LocalModel
from modelyard.runtime.runner import SetupFailed

pytestmark = pytest.mark.asyncio(loop_scope="session")

CASE_KEYS = {
    "name", "input", "status", "output", "error_contains", "logs_contains", "compare_with_coglet",
    "note", "logs_excludes", "metrics", "files", "context", "mode", "weights", "timeout",
    "setup_timeout", "cancel_after_log",
}


# --- the case files -------------------------------------------------------------------------


async def test_fixture_set_is_complete() -> None:
    names = fixture_names()
    assert len(names) >= 28
    for name in names:
        cases = load_cases(name)
        assert cases, f"{name}: no cases"
        assert len({c["name"] for c in cases}) == len(cases), f"{name}: duplicate case names"
        for case in cases:
            assert set(case) <= CASE_KEYS, f"{name}/{case['name']}: unknown keys"
            assert {"name", "input", "status", "compare_with_coglet", "note"} <= set(case)
            assert case["status"] in ("succeeded", "failed", "canceled")
            assert case["note"], f"{name}/{case['name']}: say what the case shows"
        text = (fixture_dir(name) / "cog.yaml").read_text()
        assert "python_packages" not in text and "python_requirements" not in text, name


#: Cases that show a bug in src/ (strict xfail: they flip to failures once it is fixed).
KNOWN_BUGS: dict[str, str] = {
}


@pytest.mark.parametrize(("fixture", "case"), all_cases(KNOWN_BUGS))
async def test_case(models: Any, http_server: str, fixture: str, case: dict[str, Any]) -> None:
    model = await models.get(
        fixture,
        mode=case.get("mode", "predict"),
        weights=case.get("weights"),
        setup_timeout=case.get("setup_timeout"),
    )
    result = await collect(
        model,
        substitute(case["input"], http_server),
        context=case.get("context"),
        timeout=case.get("timeout"),
        cancel_after_log=case.get("cancel_after_log"),
    )
    assert result.status == case["status"], (result.error, result.logs)
    if "output" in case:
        assert result.output == case["output"]
    if case["status"] == "failed":
        assert result.error
    if "error_contains" in case:
        assert case["error_contains"] in (result.error or "")
    for text in case.get("logs_contains", ()):
        assert text in result.logs
    for text in case.get("logs_excludes", ()):
        assert text not in result.logs
        assert all(text not in repr(e) for e in result.events)
    if "metrics" in case:
        assert result.metrics == case["metrics"]
    if "files" in case:
        assert [b.decode() for b in file_contents(result.output)] == case["files"]


# --- streaming ------------------------------------------------------------------------------


async def test_stream_items_are_separate_output_events_before_done(models: Any, tmp_path: Path) -> None:
    """The first item reaches the parent while the predictor still runs: it waits for a file the
    test creates only on receiving that item (it would wait a minute if items were batched)."""
    model = await models.get("output_iterator")
    gate = tmp_path / "gate"
    received_while_running: list[int] = []

    def on_event(event: Any) -> None:
        if isinstance(event, Output):
            received_while_running.append(event.index)
            gate.touch()

    result = await collect(model, {"n": 3, "gate": str(gate)}, on_event=on_event)
    assert result.status == "succeeded"
    kinds = [type(e).__name__ for e in result.events]
    assert kinds[0] == "Started" and kinds[-1] == "Done"
    outputs = [e for e in result.events if isinstance(e, Output)]
    assert [(e.index, e.value) for e in outputs] == [(0, "item 0"), (1, "item 1"), (2, "item 2")]
    # logs and items interleave in the order the predictor produced them
    texts = [e.text if isinstance(e, Log) else e.value for e in result.events if isinstance(e, (Log, Output))]
    assert texts == ["yielding 0\n", "item 0", "yielding 1\n", "item 1", "yielding 2\n", "item 2"]
    done = result.events[-1]
    assert isinstance(done, Done) and done.is_stream and done.output == ["item 0", "item 1", "item 2"]


@pytest.mark.parametrize("fixture", ["output_async_iterator", "output_concat"])
async def test_other_iterators_stream_items(models: Any, fixture: str) -> None:
    result = await collect(await models.get(fixture), {})
    assert result.status == "succeeded"
    assert len(result.items) >= 3
    assert result.items == result.output
    assert [e.index for e in result.events if isinstance(e, Output)] == list(range(len(result.items)))


async def test_iterator_failing_mid_stream_keeps_the_streamed_items(models: Any) -> None:
    result = await collect(await models.get("iterator_error"), {"n": 2})
    assert result.status == "failed"
    assert result.error == "broke mid-stream"
    assert result.items == ["item 0", "item 1"]
    assert isinstance(result.events[-1], Done)


async def test_iterator_of_paths_streams_output_files(models: Any) -> None:
    result = await collect(await models.get("output_iterator_path"), {"frames": 3})
    assert result.status == "succeeded"
    assert all(isinstance(item, OutputFile) for item in result.items)
    assert [f.path.read_text() for f in result.items] == ["frame 0", "frame 1", "frame 2"]
    assert [f.path.name for f in result.output] == ["frame0.txt", "frame1.txt", "frame2.txt"]


# --- concurrency ----------------------------------------------------------------------------


async def test_async_predictions_overlap(models: Any) -> None:
    model = await models.get("async_concurrency")
    assert model.runner is not None and model.runner.slots == 4
    results = await asyncio.gather(
        *(collect(model, {"seconds": 1.0, "tag": str(i)}) for i in range(4))
    )
    assert [r.status for r in results] == ["succeeded"] * 4
    assert sorted(r.output["tag"] for r in results) == ["0", "1", "2", "3"]
    assert len({r.output["pid"] for r in results}) == 1  # one worker ran them all
    # every prediction started before any of them ended: all four ran at the same time
    assert max(r.output["start"] for r in results) < min(r.output["end"] for r in results)
    # and each one's prints landed in its own logs, though they interleaved in the worker
    for r in results:
        tag = r.output["tag"]
        assert r.logs == f"begin {tag}\nend {tag}\n"
        assert r.metrics == {"tag": tag, "slept": 1.0}  # and its own metrics scope


# --- cancel, timeouts -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "raised"),
    [("cancel_sync", "got CancelationException"), ("cancel_async", "got CancelledError")],
)
async def test_cancel_then_the_same_worker_serves_the_next(
    models: Any, fixture: str, raised: str
) -> None:
    model = await models.get(fixture)
    before = await collect(model, {"seconds": 0})
    canceled = await collect(model, {"seconds": 60}, cancel_after_log="started")
    assert canceled.status == "canceled"
    assert raised in canceled.logs
    assert "finished" not in canceled.logs
    assert canceled.output is None
    after = await collect(model, {"seconds": 0})
    assert after.status == "succeeded"
    assert after.output == before.output  # the worker's pid: no restart was needed


@pytest.mark.parametrize("fixture", ["cancel_sync", "cancel_async"])
async def test_cancel_right_after_started_is_not_lost(models: Any, fixture: str) -> None:
    """The cancel can reach the worker before the prediction has begun there; it must still count."""
    model = await models.get(fixture)
    for attempt in range(5):
        prediction_id = f"early-{fixture}-{attempt}"

        async def on_event(event: Any) -> None:
            if isinstance(event, Started):
                assert await model.cancel(prediction_id)

        result = await collect(
            model, {"seconds": 60}, prediction_id=prediction_id, on_event=on_event, limit=20
        )
        assert result.status == "canceled", attempt
        assert "finished" not in result.logs


async def test_cancel_of_an_unknown_prediction_is_refused(models: Any) -> None:
    model = await models.get("cancel_sync")
    assert await model.cancel("no-such-prediction") is False


async def test_timeout_cancels_and_the_worker_survives(models: Any) -> None:
    model = await models.get("cancel_sync")
    before = await collect(model, {"seconds": 0})
    result = await collect(model, {"seconds": 60}, timeout=0.5)
    assert result.status == "failed"
    assert result.error == "Prediction timed out after 0.5 seconds"
    assert "got CancelationException" in result.logs
    after = await collect(model, {"seconds": 0})
    assert after.status == "succeeded" and after.output == before.output


async def test_uncancelable_timeout_replaces_the_worker(models: Any) -> None:
    """A predictor that swallows the cancel is killed after the grace period (5 s); the next
    prediction runs on a fresh worker."""
    model = await models.get("cancel_ignored")
    before = await collect(model, {"seconds": 0})
    result = await collect(model, {"seconds": 60}, timeout=0.5, limit=12)
    assert result.status == "failed"
    assert result.error == "Prediction timed out after 0.5 seconds"
    assert "ignoring the cancel" in result.logs
    after = await collect(model, {"seconds": 0})
    assert after.status == "succeeded"
    assert after.output != before.output


# --- crashes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "error"),
    [
        ("exit", "The worker process died: exited with code 3"),
        ("segv", "The worker process died: killed by SIGSEGV"),
        ("kill", "The worker process died: killed by SIGKILL"),
    ],
)
async def test_crash_fails_the_prediction_and_the_next_gets_a_fresh_worker(
    models: Any, how: str, error: str
) -> None:
    model = await models.get("crash")
    first = await collect(model, {"how": "none"})
    assert first.status == "succeeded"
    crashed = await collect(model, {"how": how})
    assert crashed.status == "failed"
    assert crashed.error is not None and crashed.error.startswith(error)
    assert f"about to {how}" in crashed.logs
    assert model.runner is not None and model.runner.state == "DEFUNCT"
    second = await collect(model, {"how": "none"})
    assert second.status == "succeeded"
    assert isinstance(second.output, int) and second.output != first.output
    assert model.runner.pid == second.output


async def test_segfault_reports_the_crash_trace_in_the_logs(models: Any) -> None:
    result = await collect(await models.get("crash"), {"how": "segv"})
    assert result.status == "failed"
    assert "Segmentation fault" in result.logs


# --- setup ----------------------------------------------------------------------------------


async def test_setup_failure_reports_the_exception_and_setup_logs(env_builder: Any) -> None:
    result = await run_fixture(env_builder, "setup_failure")
    assert result.status == "failed"
    assert result.error == "weights file is corrupt"
    assert "loading the model" in result.logs
    assert "RuntimeError: weights file is corrupt" in result.logs  # the traceback


async def test_prediction_on_a_failed_setup_fails_with_the_setup_error(models: Any) -> None:
    model = await models.get("setup_failure")
    assert model.runner is not None and model.runner.state == "SETUP_FAILED"
    result = await collect(model, {"x": 1})
    assert result.status == "failed"
    assert result.error == "setup failed: weights file is corrupt"


async def test_worker_exiting_during_setup(env_builder: Any) -> None:
    result = await run_fixture(env_builder, "setup_crash")
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.startswith("the worker exited during setup: exited with code 7")
    assert "exiting during setup" in result.logs


async def test_setup_timeout_kills_the_worker(env_builder: Any) -> None:
    model = LocalModel(fixture_dir("setup_slow"), builder=env_builder, setup_timeout=2)
    try:
        with pytest.raises(SetupFailed, match="^setup timed out after 2 seconds$"):
            await model.start()
        assert model.runner is not None
        assert model.runner.state == "SETUP_FAILED"
        assert model.runner.setup_result is not None
        assert model.runner.setup_result.status == "failed"
        pid = model.runner.pid
        if pid is not None:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        await model.stop()


async def test_setup_receives_weights(env_builder: Any, tmp_path: Path) -> None:
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"w")
    result = await run_fixture(env_builder, "setup_weights", weights=str(weights))
    assert result.output == f"weights=Path:{weights}"


async def test_setup_receives_url_weights_intact(env_builder: Any, http_server: str) -> None:
    url = f"{http_server}/input_path/served/hello.txt"
    result = await run_fixture(env_builder, "setup_weights", weights=url)
    assert result.status == "succeeded"
    value = result.output.split(":", 1)[1]
    assert value == url or not value.startswith("http")  # the URL itself, or a downloaded file


# --- logs -----------------------------------------------------------------------------------


async def test_subprocess_logs_land_in_their_own_prediction(models: Any) -> None:
    model = await models.get("logs_subprocess")
    first = await collect(model, {"word": "moo"})
    second = await collect(model, {"word": "baa"})
    for result, mine, other in ((first, "moo", "baa"), (second, "baa", "moo")):
        assert result.status == "succeeded"
        for line in (f"subprocess says {mine}", f"subprocess warns {mine}", f"child python says {mine}"):
            assert line in result.logs
        assert other not in result.logs
    sources = {e.source for e in first.events if isinstance(e, Log) and "warns" in e.text}
    assert sources == {"stderr"}


async def test_c_level_writes_are_captured_per_prediction(models: Any) -> None:
    model = await models.get("logs_cwrite")
    first = await collect(model, {"word": "one"})
    second = await collect(model, {"word": "two"})
    assert {"fd1 says one", "fd2 says one", "printf says one"} <= set(first.logs.splitlines())
    assert "two" not in first.logs
    assert {"fd1 says two", "fd2 says two", "printf says two"} <= set(second.logs.splitlines())


# --- metrics --------------------------------------------------------------------------------


async def test_metrics_arrive_as_events_and_in_done(models: Any) -> None:
    result = await collect(await models.get("metrics"), {"tokens": 2})
    assert result.status == "succeeded"
    events = [(m.name, m.value, m.mode) for m in result.metric_events]
    assert events[:3] == [("temperature", 0.7, "replace"), ("temperature", 0.9, "replace"), ("token_count", 1, "incr")]
    assert ("logprobs", -0.5, "append") in events
    assert ("timing.encode.ms", 12, "replace") in events
    assert ("via_self", True, "replace") in events
    assert result.metrics["token_count"] == 2
    assert "gone" not in result.metrics
    assert result.predict_time is not None and result.predict_time >= 0


# --- files ----------------------------------------------------------------------------------


async def test_path_output_is_an_output_file(models: Any) -> None:
    result = await collect(await models.get("output_path"), {"text": "abc"})
    assert isinstance(result.output, OutputFile)
    assert result.output.path.is_absolute() and result.output.path.suffix == ".txt"
    assert result.output.path.read_text() == "abc"


async def test_list_of_paths_output(models: Any) -> None:
    result = await collect(await models.get("output_list_path"), {"n": 2})
    assert [type(v) for v in result.output] == [OutputFile, OutputFile]
    assert [f.path.read_text() for f in result.output] == ["part 0", "part 1"]


async def test_file_object_output_keeps_its_name(models: Any) -> None:
    result = await collect(await models.get("output_filelike"), {"text": "xyz"})
    assert isinstance(result.output, OutputFile)
    assert result.output.path.name.endswith("answer.txt")
    assert result.output.path.read_bytes() == b"xyz"


async def test_training_output_holds_an_output_file(models: Any) -> None:
    model = await models.get("train_function", mode="train")
    result = await collect(model, {"steps": 2, "label": "cat"})
    assert result.status == "succeeded"
    assert result.output["steps"] == 2
    assert isinstance(result.output["weights"], OutputFile)
    assert result.output["weights"].path.read_text() == "cat:2"


@pytest.mark.parametrize(
    "document",
    ["data:text/plain;base64,aGVsbG8=", "{{HTTP}}/input_path/served/hello.txt"],
    ids=["data-uri", "http"],
)
async def test_downloaded_inputs_are_removed_afterwards(
    models: Any, http_server: str, document: str
) -> None:
    result = await collect(await models.get("input_path"), {"document": substitute(document, http_server)})
    assert result.status == "succeeded"
    match = re.search(r"^path=(.+)$", result.logs, re.MULTILINE)
    assert match, result.logs
    path = Path(match.group(1))
    assert path.is_absolute()
    assert not path.exists()
    scratch = next(p for p in path.parents if p.name.startswith("modelyard-in-"))
    assert not scratch.exists()


async def test_downloaded_list_inputs_are_removed_afterwards(models: Any) -> None:
    payload = {"documents": ["data:text/plain,a", "data:text/plain,b"]}
    result = await collect(await models.get("input_path_list"), payload)
    assert result.output == ["a", "b"]
    paths = [Path(p) for p in re.findall(r"^path=(.+)$", result.logs, re.MULTILINE)]
    assert len(paths) == 2 and paths[0] != paths[1]
    assert not any(p.exists() for p in paths)


async def test_failed_download_fails_without_running_the_predictor(models: Any, http_server: str) -> None:
    model = await models.get("input_path")
    result = await collect(model, {"document": f"{http_server}/input_path/served/nope.txt"})
    assert result.status == "failed"
    assert "document" in (result.error or "") and "404" in (result.error or "")
    assert not any(isinstance(e, Started) for e in result.events)
    assert "path=" not in result.logs


# --- input validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "payload", "detail"),
    [
        ("constraints_numeric", {"steps": 11},
         [(["body", "input", "steps"], "11 is greater than the maximum of 10", "value_error")]),
        ("constraints_numeric", {"steps": 0, "temperature": 1.5},
         [(["body", "input", "steps"], "0 is less than the minimum of 1", "value_error"),
          (["body", "input", "temperature"], "1.5 is greater than the maximum of 1", "value_error")]),
        ("constraints_numeric", {},
         [(["body", "input", "steps"], "Field required", "value_error.missing")]),
        ("constraints_numeric", {"steps": "3"},
         [(["body", "input", "steps"], "'3' is not of type 'integer'", "value_error")]),
        ("constraints_string", {"word": "a"},
         [(["body", "input", "word"], "'a' is too short", "value_error")]),
        ("constraints_string", {"word": "abcdef"},
         [(["body", "input", "word"], "'abcdef' is too long", "value_error")]),
        ("constraints_string", {"word": "ab", "code": "ABC"},
         [(["body", "input", "code"], "'ABC' does not match '^[a-z]+$'", "value_error")]),
        ("choices", {"scheduler": "plms"},
         [(["body", "input", "scheduler"], "'plms' is not one of ['ddim', 'euler', 'k_lms']", "value_error")]),
        ("choices", {"steps": 30},
         [(["body", "input", "steps"], "30 is not one of [10, 20, 50]", "value_error")]),
        ("input_scalars", {"text": 1, "count": True, "ratio": "x", "flag": 1},
         [(["body", "input", "text"], "1 is not of type 'string'", "value_error"),
          (["body", "input", "count"], "True is not of type 'integer'", "value_error"),
          (["body", "input", "ratio"], "'x' is not of type 'number'", "value_error"),
          (["body", "input", "flag"], "1 is not of type 'boolean'", "value_error")]),
        ("input_lists", {"names": ["a", 2]},
         [(["body", "input", "names", 1], "2 is not of type 'string'", "value_error")]),
    ],
)
async def test_invalid_input_has_cogs_422_shape(
    env_builder: Any, fixture: str, payload: dict[str, Any], detail: list[tuple[Any, str, str]]
) -> None:
    model = LocalModel(fixture_dir(fixture), builder=env_builder)
    with pytest.raises(InputValidationError) as info:
        model.validate(payload)
    assert info.value.detail() == [{"loc": loc, "msg": msg, "type": kind} for loc, msg, kind in detail]


async def test_unknown_inputs_are_dropped(env_builder: Any) -> None:
    model = LocalModel(fixture_dir("output_str"), builder=env_builder)
    assert model.validate({"name": "x", "unknown": 1}) == {"name": "x"}


# --- one-off runs ---------------------------------------------------------------------------


async def test_run_fixture_starts_and_stops_its_own_worker(env_builder: Any) -> None:
    result: Result = await run_fixture(env_builder, "environment", {"name": "NUMBER"})
    assert result.status == "succeeded"
    assert result.output == "hello from cog.yaml|42"
    assert isinstance(result.events[0], Started)
    assert not any(isinstance(e, Metric) for e in result.events)
