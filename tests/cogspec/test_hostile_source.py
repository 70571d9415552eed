"""A hostile predictor source: what would exhaust the parser or the readers that walk its tree is
one located CogSpecError (a 422 at push, a one-line error in the CLI), never a RecursionError.

Issue 13: a predict.py with a 200,000-term expression answered 500.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.cogspec.config import load_config
from modelyard.cogspec.errors import CogSpecError
from modelyard.cogspec.packagefiles import MAX_TEXT_BYTES
from modelyard.cogspec.schema import predictor_schema
from modelyard.cogspec.source import MAX_AST_DEPTH

COG_YAML = "predict: predict.py:Predictor\n"
HEAD = "from cog import BasePredictor, Input\n"
TOO_DEEP = f"an expression or block is nested more than {MAX_AST_DEPTH} levels deep"


def predictor(default: str = "1", annotation: str = "int") -> str:
    return (
        "class Predictor(BasePredictor):\n"
        f"    def predict(self, n: {annotation} = Input(default={default})) -> int:\n"
        "        return n\n"
    )


def schema_error(tmp_path: Path, source: str) -> str:
    (tmp_path / "cog.yaml").write_text(COG_YAML)
    (tmp_path / "predict.py").write_text(source)
    with pytest.raises(CogSpecError) as excinfo:
        predictor_schema(tmp_path, load_config(tmp_path))
    return str(excinfo.value)


def test_a_200000_term_expression_is_refused(tmp_path: Path) -> None:
    source = HEAD + "X = " + "+".join(["1"] * 200_000) + "\n" + predictor("X")
    assert schema_error(tmp_path, source) == f"predict.py: {TOO_DEEP}"


@pytest.mark.parametrize("terms", [MAX_AST_DEPTH, 990, 3000])
def test_a_long_sum_is_refused_at_its_line_before_it_is_walked(tmp_path: Path, terms: int) -> None:
    """990 terms used to parse, then overflow the reader's recursion; 3000 the parser's."""
    source = HEAD + "X = " + "+".join(["1"] * terms) + "\n" + predictor("X")
    assert schema_error(tmp_path, source) in (
        f"predict.py:2: {TOO_DEEP}",
        f"predict.py: {TOO_DEEP}",
    )


def test_nested_operators_are_refused(tmp_path: Path) -> None:
    source = HEAD + "X = " + "-" * 500 + "1\n" + predictor("X")
    assert schema_error(tmp_path, source) == f"predict.py:2: {TOO_DEEP}"


def test_a_long_chain_of_constants_is_refused(tmp_path: Path) -> None:
    chain = "X0 = 1\n" + "".join(f"X{i} = X{i - 1} + 1\n" for i in range(1, 2000))
    source = HEAD + chain + predictor("X1999")
    assert schema_error(tmp_path, source) == (
        "predict.py: constants defined through too long a chain of other constants"
    )


def test_a_deep_string_annotation_is_an_invalid_annotation(tmp_path: Path) -> None:
    annotation = "'" + "list[" * 5000 + "int" + "]" * 5000 + "'"
    error = schema_error(tmp_path, HEAD + predictor(annotation=annotation))
    assert error.startswith("predict.py:3: invalid type annotation 'list[list[")
    assert len(error) < 600  # the annotation is quoted, cut


def test_a_source_over_the_size_limit_is_refused_unparsed(tmp_path: Path) -> None:
    source = HEAD + predictor() + "# " + "x" * MAX_TEXT_BYTES + "\n"
    assert schema_error(tmp_path, source) == (
        f"predict.py: the file is larger than {MAX_TEXT_BYTES // 1024} KiB"
    )


def test_a_nul_byte_is_a_syntax_error(tmp_path: Path) -> None:
    error = schema_error(tmp_path, HEAD + predictor() + "x = '\0'\n")
    assert error.startswith("predict.py")


def test_ordinary_constant_expressions_still_resolve(tmp_path: Path) -> None:
    (tmp_path / "cog.yaml").write_text(COG_YAML)
    source = HEAD + "X = " + "+".join(["1"] * 50) + "\n" + predictor("X")
    (tmp_path / "predict.py").write_text(source)
    schema = predictor_schema(tmp_path, load_config(tmp_path))
    assert schema["components"]["schemas"]["Input"]["properties"]["n"]["default"] == 50
