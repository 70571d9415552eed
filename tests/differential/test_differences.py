"""The documented differences of predictions, each pinned on both sides.

Each test asserts what coglet does and what Modelyard does (a row of
docs/differences-from-cog.md), so a change on either side shows up. The input differences are
pinned in ``test_validation.py``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .normalise import coglet_cannot_load_class_trainers
from .packages import inline
from .support import (
    CASE_TIMEOUT,
    FIXTURES,
    Package,
    Pair,
    coglet_outcome,
    collect_events,
    modelyard_outcome,
    wait_for,
)

pytestmark = pytest.mark.coglet


@pytest.mark.parametrize("pair", inline("diff_basic"), indirect=True)
def test_failed_prediction_error_and_logs(pair: Pair) -> None:
    """Rows "Error of a failed prediction" and "Logs of a failed or canceled prediction"."""
    cog, mine = pair.both({"mode": "raise"})
    assert cog.error == "Prediction failed: Prediction failed: ValueError: this is a value error"
    assert cog.logs == ""
    assert mine.error == "this is a value error"
    assert mine.logs.startswith("predicting world\nto stderr\n")
    assert "Traceback (most recent call last)" in mine.logs
    assert "ValueError: this is a value error" in mine.logs


@pytest.mark.parametrize("pair", inline("diff_crash"), indirect=True)
def test_worker_crash(pair: Pair) -> None:
    """Row "Worker dies mid-prediction"."""
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
    """Row "`setup()` raised"."""
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


CLASS_TRAINER = Package("train_class", FIXTURES / "train_class", "train")


@pytest.mark.parametrize("pair", [CLASS_TRAINER], indirect=True)
def test_class_trainer(pair: Pair) -> None:
    """Row "`train: "train.py:Trainer"` naming a class" (tests/fixtures/train_class)."""
    cog, mine = pair.both({"steps": 3})
    assert cog.kind == "setup_failed"
    assert "run or predict method not found" in (cog.error or ""), cog.error
    assert pair.coglet.get_health()["status"] == "SETUP_FAILED"
    assert mine.kind == "prediction" and mine.status == "succeeded", mine
    assert mine.output == {"message": "trained for 3 steps", "steps": 3}
    assert coglet_cannot_load_class_trainers(cog, mine)


@pytest.mark.parametrize("pair", inline("diff_busy"), indirect=True)
def test_busy_slots_queue_instead_of_409(pair: Pair, tmp_path: Path) -> None:
    """Row "All slots busy"."""
    gate = tmp_path / "gate"
    payload = {"gate": str(gate), "name": "held"}
    inputs = pair.model.validate(payload)
    with ThreadPoolExecutor(4) as pool:
        # coglet: two predictions hold both slots; a third is refused at once.
        held = [pool.submit(pair.coglet.post_prediction, payload, retry_409=0) for _ in range(2)]
        wait_for(lambda: pair.coglet.get_health()["status"] == "BUSY")
        refused = pair.coglet.post_prediction({"name": "third"}, retry_409=0)
        assert refused.status_code == 409
        assert refused.json() == {
            "error": "At capacity - all prediction slots busy",
            "status": "failed",
        }
        # Modelyard: the third waits for a slot and runs.
        mine = [
            asyncio.run_coroutine_threadsafe(collect_events(pair.model, inputs), pair.loop.loop)
            for _ in range(2)
        ]
        wait_for(lambda: pair.model.runner.state == "BUSY")
        third = asyncio.run_coroutine_threadsafe(
            collect_events(pair.model, pair.model.validate({"name": "third"})), pair.loop.loop
        )
        assert not third.done()
        gate.write_text("open")
        assert [f.result(CASE_TIMEOUT).json()["output"] for f in held] == ["held", "held"]
        assert [f.result(CASE_TIMEOUT)[-1].output for f in mine] == ["held", "held"]
        assert third.result(CASE_TIMEOUT)[-1].output == "third"


@pytest.mark.parametrize("pair", inline("diff_outputs"), indirect=True)
def test_unterminated_last_log_line(pair: Pair) -> None:
    """Row "Last log line without a newline"."""
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
    """Row "Integers beyond 64 bits in outputs"."""
    cog, mine = pair.both({"what": "bigint"})
    assert cog.output == 1.1805916207174112e21  # coglet: through an f64
    assert mine.output == 2**70
