"""The inline packages' inputs that run a prediction, compared like fixture cases (assert_same).

Their invalid inputs (422s) are in ``test_validation.py``; the packages are in ``packages.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from .compare import assert_same
from .support import Package, Pair

pytestmark = pytest.mark.coglet

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
        ]
    ],
    pytest.param(Package("diff_crash"), {}, id="diff_crash/fine"),
    pytest.param(Package("diff_setup_failure"), {}, id="diff_setup_failure/predict"),
    pytest.param(Package("diff_busy"), {"name": "q"}, id="diff_busy/one"),
    pytest.param(Package("diff_train", mode="train"), {}, id="diff_train/defaults"),
    pytest.param(
        Package("diff_train", mode="train"), {"steps": 5, "name": "z"}, id="diff_train/values"
    ),
]


@pytest.mark.parametrize("pair, payload", INLINE_CASES, indirect=["pair"])
def test_inline_case(pair: Pair, payload: Any) -> None:
    """The inline packages' inputs: the same comparison as for the fixtures."""
    cog, mine = pair.both(payload)
    assert_same(cog, mine)
