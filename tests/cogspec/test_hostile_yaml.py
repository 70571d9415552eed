"""A hostile cog.yaml: anchors and aliases, non-scalar keys, deep nesting and size are refused
while the file is composed, before any value is built, with one short line naming where.

Issue 13: a 329-byte cog.yaml whose complex key held aliases expanded to 10^7 items (a 72 MB
error and +790 MB of server memory); an alias bomb in `weights:` was accepted; nesting 10^5 deep
was a RecursionError (a 500).
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from modelyard.cogspec.config import load_config
from modelyard.cogspec.errors import MAX_MESSAGE, CogSpecError
from modelyard.cogspec.yamlnodes import MAX_CONFIG_BYTES, MAX_DEPTH

PREDICTOR = "class Predictor:\n    def predict(self) -> str:\n        return 'hi'\n"
HEAD = "predict: predict.py:Predictor\n"
# Seven levels of ten aliases each: 10^7 items once built.
LEVELS = "".join(f"&{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "], " for i in range(6))
COMPLEX_KEY = f"? [&a [x,x,x,x,x,x,x,x,x,x], {LEVELS}[*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]]\n: 1\n"
ALIAS_IN_WEIGHTS = (
    "weights:\n"
    "  - name: w\n"
    "    target: &b [&a [x,x,x,x,x,x,x,x,x,x],*a,*a,*a,*a,*a,*a,*a,*a,*a]\n"
    "    source: [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
)
ALIAS_ERROR = (
    "YAML anchors and aliases (&name, *name) are not allowed in cog.yaml: write the value out"
)


def package(tmp_path: Path, cog_yaml: str) -> Path:
    (tmp_path / "predict.py").write_text(PREDICTOR)
    (tmp_path / "cog.yaml").write_text(cog_yaml)
    return tmp_path


def refused(folder: Path) -> str:
    """The error of loading the package, with the peak of memory Python allocated meanwhile."""
    tracemalloc.start()
    try:
        with pytest.raises(CogSpecError) as excinfo:
            load_config(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"{peak} bytes allocated to refuse it"
    return str(excinfo.value)


def test_aliases_in_a_complex_key_are_refused_before_anything_is_built(tmp_path: Path) -> None:
    cog_yaml = HEAD + COMPLEX_KEY
    assert len(cog_yaml) < 400
    error = refused(package(tmp_path, cog_yaml))
    assert error == "cog.yaml:2: a mapping key must be a plain value, not a list or a mapping"


def test_an_alias_bomb_in_weights_is_refused(tmp_path: Path) -> None:
    assert refused(package(tmp_path, HEAD + ALIAS_IN_WEIGHTS)) == f"cog.yaml:4: {ALIAS_ERROR}"


@pytest.mark.parametrize(
    ("cog_yaml", "line"),
    [
        ("build: &b\n  gpu: false\npredict: predict.py:Predictor\n", 1),  # an anchor alone
        ("x: &p predict.py:Predictor\npredict: *p\n", 1),
        ("predict: predict.py:Predictor\nbuild:\n  <<: *nothing\n", 3),  # undefined, still refused
    ],
)
def test_anchors_and_aliases_are_refused(tmp_path: Path, cog_yaml: str, line: int) -> None:
    assert refused(package(tmp_path, cog_yaml)) == f"cog.yaml:{line}: {ALIAS_ERROR}"


@pytest.mark.parametrize(
    "key", ["[a, b]", "{a: 1}", "? - a\n  - b\n"], ids=["flow-list", "flow-map", "block-list"]
)
def test_non_scalar_keys_are_refused(tmp_path: Path, key: str) -> None:
    cog_yaml = HEAD + (key if key.startswith("?") else f"{key}: 1\n")
    assert refused(package(tmp_path, cog_yaml)).startswith(
        "cog.yaml:2: a mapping key must be a plain value"
    )


@pytest.mark.parametrize(
    ("nested", "line"),
    [
        ("[" * 100_000 + "]" * 100_000, 2),
        ("{a: " * 50_000 + "1" + "}" * 50_000, 2),
        ("\n" + "".join(f"{'  ' * (i + 1)}-\n" for i in range(100)), 2 + MAX_DEPTH),
    ],
    ids=["flow-lists", "flow-maps", "block-lists"],
)
def test_deep_nesting_is_refused_with_its_line(tmp_path: Path, nested: str, line: int) -> None:
    error = refused(package(tmp_path, f"{HEAD}environment: {nested}\n"))
    assert error == f"cog.yaml:{line}: nested more than {MAX_DEPTH} levels deep"


def test_ordinary_nesting_is_read(tmp_path: Path) -> None:
    cog_yaml = HEAD + (
        "build:\n  run:\n    - command: echo hi\n      mounts:\n"
        "        - {type: secret, id: token, target: /run/token}\n"
    )
    assert load_config(package(tmp_path, cog_yaml)).run_commands == ("echo hi",)


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    cog_yaml = HEAD + "# " + "x" * MAX_CONFIG_BYTES + "\n"
    assert refused(package(tmp_path, cog_yaml)) == (
        f"cog.yaml: the file is larger than {MAX_CONFIG_BYTES // 1024} KiB"
    )


def test_an_error_quoting_a_huge_value_is_cut(tmp_path: Path) -> None:
    error = refused(package(tmp_path, HEAD + f"? {'k' * 100_000}\n: 1\n"))
    assert error.startswith("cog.yaml:2: unknown key 'kkk") and error.endswith("…")
    assert len(error) <= len("cog.yaml:2: ") + MAX_MESSAGE
