"""Replay of ``tests/fixtures/*/cases.json`` under coglet and Modelyard: every case marked
``compare_with_coglet: true`` (see tests/fixtures/README.md).

Only fixtures with at least one such case are collected; the others (and every case) are run
through Modelyard alone by ``tests/runtime/test_fixtures.py``, which also checks that every fixture
has a ``cases.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fixture_support import substitute

from .compare import assert_same
from .normalise import FileValue, comparable
from .support import FIXTURES, Outcome, Package, Pair

pytestmark = pytest.mark.coglet

PREDICTION_STATUSES = ("succeeded", "failed", "canceled")

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


def fixture_params(fixtures: Path = FIXTURES) -> list[Any]:
    """``pytest.param(Package, case)`` for each case marked ``compare_with_coglet: true``.

    A fixture without such a case (or without cases.json) is not collected here. An unreadable
    cases.json gives a param whose test fails.
    """
    params: list[Any] = []
    for folder in sorted(p for p in fixtures.iterdir() if p.is_dir()):
        cases_file = folder / "cases.json"
        if folder.name.startswith((".", "_")) or not (folder / "cog.yaml").is_file():
            continue
        if not cases_file.is_file():  # tests/runtime/test_fixtures.py fails on it
            continue
        try:
            cases = json.loads(cases_file.read_text())
        except ValueError as exc:
            broken = {"name": "cases.json", "broken": f"{cases_file}: {exc}"}
            params.append(
                pytest.param(Package(folder.name, folder), broken, id=f"{folder.name}/cases.json")
            )
            continue
        for case in cases:
            if case.get("compare_with_coglet"):
                package = Package(folder.name, folder, case.get("mode", "predict"))
                params.append(pytest.param(package, case, id=f"{folder.name}/{case['name']}"))
    return params


FIXTURE_PARAMS = fixture_params()
# An empty list would make pytest skip the test: fail at collection instead.
assert FIXTURE_PARAMS, f"no case under {FIXTURES} has compare_with_coglet: true"


@pytest.mark.parametrize("pair, case", FIXTURE_PARAMS, indirect=["pair"])
def test_fixture_case(pair: Pair, case: dict[str, Any], http_server: str) -> None:
    """Every fixture case marked compare_with_coglet: same status, output, error, logs, 422s."""
    if "broken" in case:
        pytest.fail(case["broken"])
    unknown = set(case) - CASE_KEYS
    assert not unknown, (
        f"the differential comparison does not support {sorted(unknown)}: "
        "mark the case compare_with_coglet: false, with a note saying why"
    )
    cog, mine = pair.both(substitute(case.get("input"), http_server), case.get("context"))
    # A succeeded case without "output" has one that differs per run (a pid, timings), unless
    # it gives its files' contents: files are compared by content (FileValue).
    assert_same(cog, mine, exact_output="output" in case or "files" in case)
    assert_case_expectations(case, cog, mine)
