"""The rest of Cog's type system (issue 14), as Cog 0.23's Go generator renders it
(`pkg/schema/types.go` and `openapi_spec.go` of github.com/replicate/cog; the cases mirror its
`parser_test.go`): TypedDict inputs, unions with list members, `Annotated[..., Opaque]`, models
imported from other files of the package, optional secrets. Runtime behaviour is compared with
coglet in tests/differential/test_cog_types.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelyard.cogspec.config import load_config
from modelyard.cogspec.errors import CogSpecError
from modelyard.cogspec.schema import predictor_schema

from .conftest import COG_YAML

HEAD = (
    "from typing import Annotated, List, Optional, Union\n"
    "from cog import BasePredictor, Input, Opaque, Path, Secret\n\n"
)


@pytest.fixture
def schema_of(write_package: Callable[[dict[str, str]], Path]) -> Callable[..., dict[str, Any]]:
    def build(source: str, **files: str) -> dict[str, Any]:
        package = write_package({"cog.yaml": COG_YAML, "predict.py": source, **files})
        return predictor_schema(package, load_config(package))

    return build


def inputs(schema_of: Callable[..., dict[str, Any]], params: str, **files: str) -> dict[str, Any]:
    source = f"{HEAD}class Predictor(BasePredictor):\n    def predict(self, {params}) -> str: ...\n"
    props: dict[str, Any] = schema_of(source, **files)["components"]["schemas"]["Input"]
    return props


def test_typeddict_inputs_are_opaque_objects(schema_of: Callable[..., dict]) -> None:
    source = (
        "from typing import TypedDict, Optional, List\nfrom cog import BasePredictor\n\n"
        "class Box(TypedDict, total=False):\n    x: int\n\n"
        "class Predictor(BasePredictor):\n"
        "    def predict(self, box: Box, boxes: List[Box], maybe: Optional[Box] = None,"
        " either: Box | str = 'a') -> Box: ...\n"
    )
    schema = schema_of(source)["components"]["schemas"]
    props = schema["Input"]["properties"]
    assert props["box"] == {"type": "object", "title": "Box", "x-order": 0}
    assert props["boxes"]["items"] == {"type": "object"}
    assert props["maybe"]["nullable"] is True and props["maybe"]["type"] == "object"
    assert props["either"]["anyOf"] == [{"type": "object"}, {"type": "string"}]
    assert schema["Input"]["required"] == ["box", "boxes"]
    # As an output a TypedDict keeps its fields (Cog's SchemaObject).
    assert schema["Output"]["properties"]["x"]["type"] == "integer"


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ("list[int] | list[float]", [
            {"items": {"type": "integer"}, "type": "array"},
            {"items": {"type": "number"}, "type": "array"},
        ]),
        ("Union[str, List[str]]", [{"type": "string"}, {"items": {"type": "string"}, "type": "array"}]),
        ("int | list[int]", [{"type": "integer"}, {"items": {"type": "integer"}, "type": "array"}]),
        ("list[dict] | str", [{"items": {"type": "object"}, "type": "array"}, {"type": "string"}]),
        ("Optional[Union[int, List[int]]]", [
            {"type": "integer", "nullable": True},
            {"items": {"type": "integer"}, "type": "array", "nullable": True},
        ]),
    ],
)  # fmt: skip
def test_unions_with_list_members(
    schema_of: Callable[..., dict], annotation: str, expected: list[dict[str, Any]]
) -> None:
    prop = inputs(schema_of, f"x: {annotation} = None")["properties"]["x"]
    assert prop["anyOf"] == expected


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("x: Path | list[str]", "unsupported input type Path | list[str] for 'x'"),
        ("x: str | list[Path]", "unsupported input type str | list[Path] for 'x'"),
        ("x: int | list[list[int]]", "unsupported input type int | list[list[int]] for 'x'"),
        ("x: int | list[Optional[int]]", "unsupported input type"),
        ("x: int | list[int] = Input(default=1, ge=0)", "constraints are not supported on union"),
    ],
)
def test_unions_cog_refuses(schema_of: Callable[..., dict], params: str, message: str) -> None:
    with pytest.raises(CogSpecError) as excinfo:
        inputs(schema_of, params)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("annotation", "expected"),
    [
        ("Annotated[List[ThirdParty], Opaque]", {"type": "array", "items": {"type": "object"}}),
        ("Annotated[list, Opaque]", {"type": "array", "items": {"type": "object"}}),
        ("Annotated[list[int], Opaque]", {"type": "array", "items": {"type": "object"}}),
        ("Annotated[ThirdParty, Opaque]", {"type": "object"}),
        ("Annotated[otherlib.List[ThirdParty], Opaque]", {"type": "object"}),
        ("Annotated[Optional[ThirdParty], Opaque]", {"type": "object", "nullable": True}),
        ("Annotated[Union[List[ThirdParty], None], Opaque]",
         {"type": "array", "items": {"type": "object"}, "nullable": True}),
        ("Annotated[list, Opaque] | None",
         {"type": "array", "items": {"type": "object"}, "nullable": True}),
        ("List[Annotated[ThirdParty, Opaque]]", {"type": "array", "items": {"type": "object"}}),
    ],
)  # fmt: skip
def test_opaque_inputs(
    schema_of: Callable[..., dict], annotation: str, expected: dict[str, Any]
) -> None:
    source = f"import otherlib\nfrom somelib import ThirdParty\n{HEAD}"
    source += (
        f"class Predictor(BasePredictor):\n    def predict(self, x: {annotation}) -> str: ...\n"
    )
    prop = schema_of(source)["components"]["schemas"]["Input"]["properties"]["x"]
    assert {k: v for k, v in prop.items() if k not in ("title", "x-order")} == expected


TYPES = (
    "from typing import List, Optional\nfrom cog import BaseModel\n\n"
    "class Base(BaseModel):\n    label: str\n\n"
    "class Output(Base):\n    scores: List[float]\n    note: Optional[str] = None\n"
)
OUTPUT = {
    "properties": {
        "label": {"type": "string", "title": "Label"},
        "scores": {"items": {"type": "number"}, "type": "array", "title": "Scores"},
        "note": {"type": "string", "nullable": True, "title": "Note"},
    },
    "type": "object",
    "required": ["label", "scores"],
    "title": "Output",
}


@pytest.mark.parametrize(
    ("imports", "returns", "files"),
    [
        ("from output_types import Output", "Output", {"output_types.py": TYPES}),
        ("from .output_types import Output", "Output", {"output_types.py": TYPES}),
        ("import output_types as t", "t.Output", {"output_types.py": TYPES}),
        ("from pkg.types import Output", "Output", {"pkg/__init__.py": "", "pkg/types.py": TYPES}),
        ("from pkg import Output", "Output",
         {"pkg/__init__.py": "from .types import Output\n", "pkg/types.py": TYPES}),
        ("from base import Base\nfrom typing import List, Optional", "Output", {
            "base.py": "from cog import BaseModel\n\nclass Base(BaseModel):\n    label: str\n",
            "predict_types.py": "",
        }),
    ],
)  # fmt: skip
def test_output_model_from_another_file(
    schema_of: Callable[..., dict], imports: str, returns: str, files: dict[str, str]
) -> None:
    local = ""
    if returns == "Output" and "output_types" not in imports and "pkg" not in imports:
        # The model is here, its base class in base.py.
        local = "class Output(Base):\n    scores: List[float]\n    note: Optional[str] = None\n\n"
    source = f"{imports}\nfrom cog import BasePredictor\n\n{local}"
    source += f"class Predictor(BasePredictor):\n    def predict(self) -> {returns}: ...\n"
    assert schema_of(source, **files)["components"]["schemas"]["Output"] == OUTPUT


def test_an_imported_type_that_is_not_a_model_is_still_an_error(
    schema_of: Callable[..., dict],
) -> None:
    source = (
        "from helpers import Thing\nfrom cog import BasePredictor\n\n"
        "class Predictor(BasePredictor):\n    def predict(self) -> Thing: ...\n"
    )
    with pytest.raises(CogSpecError) as excinfo:
        schema_of(source, **{"helpers.py": "class Thing:\n    pass\n"})
    assert "class 'Thing' is not a BaseModel, dataclass or TypedDict" in str(excinfo.value)
    assert str(excinfo.value).startswith("helpers.py:1: ")


def test_optional_secrets(schema_of: Callable[..., dict]) -> None:
    schema = inputs(
        schema_of,
        "a: Secret = Input(default=None), b: Secret = None, c: Optional[Secret] = None, "
        "d: Secret = Input(description='required'), seed: int = Input(default=None)",
    )
    props = schema["properties"]
    for name in "abc":
        assert props[name]["nullable"] is True and props[name]["default"] is None, name
    assert "nullable" not in props["d"] and "default" not in props["d"]
    # Cog 0.23 makes `seed` required; Modelyard keeps Cog 0.16's optional (differences-from-cog.md).
    assert "default" not in props["seed"] and "nullable" not in props["seed"]
    assert schema["required"] == ["d"]
