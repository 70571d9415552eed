"""`-i name=value` on the real `modelyard` command: union inputs typed from the schema as Cog's CLI
types them, and unknown names refused before anything starts (as Cog's CLI does), while the HTTP
API drops unknown input keys (as Replicate's API and Cog's server do).

Cog's rules are read from github.com/replicate/cog: `pkg/predict/input.go` (`newSingleInput`,
`coerceScalarValue`) and `pkg/predict/input_validation.go` (`validateKnownInputs`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from test_cli import FIXTURES, assert_one_line_error, predict_json, run

E2E = Path(__file__).resolve().parents[1] / "e2e"
if str(E2E) not in sys.path:  # the live server of the end-to-end tests
    sys.path.insert(0, str(E2E))

from live import LiveServer, Tls

COG_YAML = 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'
UNIONS = """
import json
from typing import List, Union
from cog import BasePredictor

def show(value):
    if isinstance(value, list):
        return [show(v) for v in value]
    return f"{type(value).__name__}:{value!r}"

class Predictor(BasePredictor):
    def predict(
        self,
        name: str = "Ada",
        amount: Union[int, float] = 1,
        ratio: str | float = "x",
        words: str | list[str] = "w",
        nums: List[int] | List[float] = [0],
        count: int | list[int] = 0,
        flag: bool | str = False,
    ) -> str:
        return json.dumps({k: show(v) for k, v in locals().items() if k != "self"})
"""
VALID = "valid inputs are: amount, count, flag, name, nums, ratio, words"


@pytest.fixture
def unions(tmp_path: Path) -> Path:
    folder = tmp_path / "unions"
    folder.mkdir()
    (folder / "cog.yaml").write_text(COG_YAML)
    (folder / "predict.py").write_text(UNIONS)
    return folder


def received(package: Path, *options: str, cwd: Path) -> dict[str, Any]:
    """What the model received for `-i` options (its output lists each value with its type)."""
    args = [a for option in options for a in ("-i", option)]
    result = predict_json(package, *args, cwd=cwd)
    assert result["status"] == "succeeded", result
    seen: dict[str, Any] = json.loads(result["output"])
    return seen


def test_union_inputs_are_typed_from_the_schema(unions: Path, tmp_path: Path) -> None:
    """`int | float` takes 1.5 and 2, `str | float` a number when one is given, else the text;
    a list member takes repeated options (or a JSON list); a boolean member takes true/false."""
    seen = received(
        unions,
        "amount=1.5", "ratio=1.5", "words=a", "nums=1", "nums=2.5", "count=[1,2]", "flag=true",
        cwd=tmp_path,
    )  # fmt: skip
    assert seen == {
        "name": "str:'Ada'",
        "amount": "float:1.5",
        "ratio": "float:1.5",
        "words": "str:'a'",
        "nums": ["float:1.0", "float:2.5"],
        "count": ["int:1", "int:2"],
        "flag": "bool:True",
    }
    seen = received(
        unions,
        "amount=2", "ratio=abc", "words=a", "words=b", "nums=[3,4]", "count=5", "flag=maybe",
        cwd=tmp_path,
    )  # fmt: skip
    assert seen == {
        "name": "str:'Ada'",
        "amount": "int:2",
        "ratio": "str:'abc'",
        "words": ["str:'a'", "str:'b'"],
        "nums": ["int:3", "int:4"],
        "count": "int:5",
        "flag": "str:'maybe'",
    }


def test_a_union_value_no_member_accepts_is_an_input_error(unions: Path, tmp_path: Path) -> None:
    proc = run("predict", unions, "-i", "amount=lots", cwd=tmp_path)
    assert_one_line_error(proc, "invalid input", "amount", "'lots'")


def test_unknown_input_is_refused_before_anything_starts(unions: Path, tmp_path: Path) -> None:
    """Cog's message, one line, exit 1; nothing was started (no other line on stderr)."""
    proc = run("predict", unions, "-i", "wrong=value", cwd=tmp_path)
    assert_one_line_error(proc, f'unknown input "wrong"; {VALID}')
    assert "Starting" not in proc.stderr


def test_unknown_input_near_a_known_one_says_which(unions: Path, tmp_path: Path) -> None:
    proc = run("predict", unions, "-i", "nmae=Bo", cwd=tmp_path)
    assert_one_line_error(proc, 'unknown input "nmae" (did you mean "name"?)', VALID)
    proc = run("predict", unions, "-i", "zzz=1", "-i", "name=x", "-i", "yyy=2", cwd=tmp_path)
    assert_one_line_error(proc, f'unknown inputs "yyy", "zzz"; {VALID}')


def test_a_model_without_inputs(tmp_path: Path) -> None:
    package = tmp_path / "bare"
    package.mkdir()
    (package / "cog.yaml").write_text(COG_YAML)
    (package / "predict.py").write_text(
        "from cog import BasePredictor\n\nclass Predictor(BasePredictor):\n"
        "    def predict(self) -> str:\n        return 'hi'\n"
    )
    proc = run("predict", package, "-i", "x=1", cwd=tmp_path)
    assert_one_line_error(proc, 'unknown input "x"; model does not accept inputs')


def test_train_refuses_unknown_inputs_locally_and_before_pushing(tmp_path: Path) -> None:
    """`modelyard train` checks names against TrainingInput; with -d, before any network use
    (the server named here does not exist)."""
    proc = run("train", FIXTURES / "train_function", "-i", "stpes=4", "-o", tmp_path)
    assert_one_line_error(proc, 'unknown input "stpes" (did you mean "steps"?)')
    proc = run(
        "train", FIXTURES / "train_function", "-i", "stpes=4",
        "-d", "me/trained", "--api", "http://127.0.0.1:9", "--token", "r8_x",
    )  # fmt: skip
    assert_one_line_error(proc, 'unknown input "stpes"')


def test_the_api_drops_unknown_input_keys(unions: Path, tmp_path: Path) -> None:
    """Replicate's API ignores unknown keys inside `input` (its 2024-05-01 changelog: only
    top-level body keys are checked), and so does Cog's server (cog PR #2943): the prediction
    runs without them, so a client may send a newer model's inputs to an older version."""
    server = LiveServer(data_dir=tmp_path / "data", tls=Tls(tmp_path / "tls")).start()
    try:
        server.push(unions, "admin/unions")
        with server.http() as client:
            created = client.post(
                "/v1/models/admin/unions/predictions",
                json={"input": {"name": "Bo", "guidance_scale": 7.5, "amount": 2.5}},
                headers={"Prefer": "wait=60"},
            )
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["status"] == "succeeded", body
        seen = json.loads(body["output"])
        assert seen["name"] == "str:'Bo'" and seen["amount"] == "float:2.5"
    finally:
        server.stop()
