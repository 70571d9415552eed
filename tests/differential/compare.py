"""The comparison: the two sides did the same with one input, modulo the documented differences.

Each tolerated difference goes through one named function of ``normalise.py``; anything else
fails with both sides' answers in the message.
"""

from __future__ import annotations

from typing import Any

from .normalise import (
    coglet_cannot_load_class_trainers,
    coglet_holds_back_unterminated_line,
    coglet_loc,
    coglet_logs_on_failure,
    coglet_logs_without_fd_output,
    one_error_per_wrong_type,
    same_error,
    same_validation_message,
    validated_before_setup,
)
from .support import Outcome


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
