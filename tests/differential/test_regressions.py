"""Bugs this comparison found in Modelyard, fixed since and kept as regression tests.

NaN, set and missing-file outputs were fixed in 7554514; the profiler hang (the worker cleared
async exceptions with NULL, which spins CPython 3.11 under a profiler) in f7e74da.
"""

from __future__ import annotations

import pytest

from .packages import inline
from .support import Pair, coglet_outcome, collect_events, modelyard_outcome

pytestmark = pytest.mark.coglet


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
    events = pair.loop.run(collect_events(pair.model, inputs, timeout=5))
    assert (events[-1].status, events[-1].output) == ("succeeded", 190), events[-1]
