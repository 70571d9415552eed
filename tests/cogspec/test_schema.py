"""Schema generation beyond what Cog 0.16 can be compared on, and every generation error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelyard.cogspec.config import load_config
from modelyard.cogspec.errors import CogSpecError
from modelyard.cogspec.schema import predictor_schema

from .conftest import COG_YAML

Writer = Callable[[dict[str, str]], Path]


@pytest.fixture
def schema_of(write_package: Writer) -> Callable[..., dict[str, Any]]:
    def build(source: str, cog_yaml: str = COG_YAML, **files: str) -> dict[str, Any]:
        package = write_package({"cog.yaml": cog_yaml, "predict.py": source, **files})
        return predictor_schema(package, load_config(package))

    return build


@pytest.fixture
def error_of(schema_of: Callable[..., dict[str, Any]]) -> Callable[..., str]:
    def build(source: str, cog_yaml: str = COG_YAML, **files: str) -> str:
        with pytest.raises(CogSpecError) as excinfo:
            schema_of(source, cog_yaml, **files)
        return str(excinfo.value)

    return build


def components(schema: dict[str, Any]) -> dict[str, Any]:
    return schema["components"]["schemas"]


def test_runner_with_run_method_streaming_and_accept(schema_of: Callable[..., dict]) -> None:
    schema = schema_of(
        """
        from typing import AsyncIterator

        import cog
        from cog import BaseRunner, Input, Path


        class Runner(BaseRunner):
            async def setup(self, weights: str | None = None) -> None:
                pass

            @cog.streaming
            async def run(
                self,
                image: Path = Input(description="Photo", accept="image/*"),
                *,
                strength: float = Input(default=0.8, ge=0.0, le=1.0),
            ) -> AsyncIterator[str]:
                yield "x"
        """,
        cog_yaml="build:\n  python_version: '3.12'\nrun: predict.py\n",
    )
    assert components(schema)["Input"] == {
        "properties": {
            "image": {
                "type": "string",
                "format": "uri",
                "title": "Image",
                "description": "Photo",
                "x-cog-accept": "image/*",
                "x-order": 0,
            },
            "strength": {
                "type": "number",
                "maximum": 1.0,
                "minimum": 0.0,
                "title": "Strength",
                "default": 0.8,
                "x-order": 1,
            },
        },
        "type": "object",
        "required": ["image"],
        "title": "Input",
    }
    assert components(schema)["Output"] == {
        "items": {"type": "string"},
        "type": "array",
        "x-cog-array-type": "iterator",
        "title": "Output",
    }
    assert schema["paths"]["/predictions"]["post"]["x-cog-streaming"] is True


@pytest.mark.parametrize(
    ("imports", "decorator"),
    [
        ("from cog import streaming", "@streaming"),
        ("from cog import streaming", "@streaming()"),
        ("import cog", "@cog.streaming()"),
    ],
)
def test_streaming_decorator_spellings(
    schema_of: Callable[..., dict], imports: str, decorator: str
) -> None:
    source = f"{imports}\nfrom cog import ConcatenateIterator\n\nclass Predictor:\n    {decorator}\n    def predict(self) -> ConcatenateIterator[str]:\n        yield 'a'\n"
    schema = schema_of(source)
    assert schema["paths"]["/predictions"]["post"]["x-cog-streaming"] is True


def test_no_streaming_marker_without_decorator(schema_of: Callable[..., dict]) -> None:
    schema = schema_of(
        "class Predictor:\n    @staticmethod\n    def helper(): ...\n    def predict(self) -> str:\n        return ''\n"
    )
    assert "x-cog-streaming" not in schema["paths"]["/predictions"]["post"]


def test_async_concatenate_iterator(schema_of: Callable[..., dict]) -> None:
    schema = schema_of(
        "from cog import AsyncConcatenateIterator\n\nclass Predictor:\n"
        "    async def predict(self) -> AsyncConcatenateIterator[str]:\n        yield 'a'\n"
    )
    assert components(schema)["Output"] == {
        "items": {"type": "string"},
        "type": "array",
        "x-cog-array-display": "concatenate",
        "x-cog-array-type": "iterator",
        "title": "Output",
    }


def test_dataclass_typeddict_and_named_models_are_inlined(schema_of: Callable[..., dict]) -> None:
    schema = schema_of(
        """
        from __future__ import annotations

        import dataclasses
        from typing_extensions import NotRequired, TypedDict

        from pydantic import BaseModel, Field
        from cog import Path


        @dataclasses.dataclass(frozen=True)
        class Box:
            x: int
            label: str = "thing"


        class Meta(TypedDict, total=False):
            seed: int


        class Frame(TypedDict):
            image: Path
            note: NotRequired[str]


        class Base(BaseModel):
            id: str


        class Result(Base):
            boxes: list[Box]
            meta: Meta
            frames: list[Frame] = Field(default_factory=list)
            score: float = Field(0.0, description="confidence")


        class Predictor:
            def predict(self) -> "Result":
                ...
        """
    )
    assert components(schema)["Output"] == {
        "properties": {
            "id": {"type": "string", "title": "Id"},
            "boxes": {
                "items": {
                    "properties": {
                        "x": {"type": "integer", "title": "X"},
                        "label": {"type": "string", "title": "Label", "default": "thing"},
                    },
                    "type": "object",
                    "required": ["x"],
                },
                "type": "array",
                "title": "Boxes",
            },
            "meta": {
                "properties": {"seed": {"type": "integer", "title": "Seed"}},
                "type": "object",
                "title": "Meta",
            },
            "frames": {
                "items": {
                    "properties": {
                        "image": {"type": "string", "format": "uri", "title": "Image"},
                        "note": {"type": "string", "title": "Note"},
                    },
                    "type": "object",
                    "required": ["image"],
                },
                "type": "array",
                "title": "Frames",
            },
            "score": {"type": "number", "title": "Score", "default": 0.0},
        },
        "type": "object",
        "required": ["id", "boxes", "meta"],
        "title": "Output",
    }
    assert set(components(schema)) >= {"Input", "Output"}
    assert "Result" not in components(schema)


def test_dict_and_any_inputs_and_aliases(schema_of: Callable[..., dict]) -> None:
    schema = schema_of(
        """
        import typing as t
        import cog as c
        from cog import Path as CogPath, Secret as S


        class Base(c.BasePredictor):
            def predict(
                self,
                options: dict = {"a": 1},
                extra: t.Any = c.Input(description="anything"),
                files: t.List[CogPath] = c.Input(default=None),
                token: t.Optional[S] = None,
                mode: "str" = c.Input(default="x"),
            ) -> t.Dict[str, int]:
                ...


        class Predictor(Base):
            pass
        """
    )
    assert components(schema)["Input"]["properties"] == {
        "options": {"type": "object", "title": "Options", "default": {"a": 1}, "x-order": 0},
        "extra": {"type": "object", "title": "Extra", "description": "anything", "x-order": 1},
        "files": {
            "items": {"type": "string", "format": "uri"},
            "type": "array",
            "title": "Files",
            "x-order": 2,
        },
        "token": {
            "type": "string",
            "format": "password",
            "writeOnly": True,
            "x-cog-secret": True,
            "title": "Token",
            "x-order": 3,
            "nullable": True,
            "default": None,  # as Cog's Go generator, for a Secret defaulting to None
        },
        "mode": {"type": "string", "title": "Mode", "default": "x", "x-order": 4},
    }
    assert components(schema)["Input"]["required"] == ["extra"]
    assert components(schema)["Output"] == {
        "additionalProperties": {"type": "integer"},
        "type": "object",
        "title": "Output",
    }


def test_function_predictor_and_constants(schema_of: Callable[..., dict]) -> None:
    schema = schema_of(
        """
        from cog import Input
        LIMIT: int = 10
        NAMES = ("a", "b") + ("c",)
        DEFAULT = NAMES[0] if True else None

        def predict(n: int = Input(default=LIMIT // 2, le=LIMIT * 2), name: str = Input(choices=sorted(NAMES), default="b")) -> int:
            return n
        """,
        cog_yaml="predict: predict.py:predict\n",
    )
    props = components(schema)["Input"]["properties"]
    assert props["n"] == {
        "type": "integer",
        "maximum": 20.0,
        "title": "N",
        "default": 5,
        "x-order": 0,
    }
    assert components(schema)["name"]["enum"] == ["a", "b", "c"]
    assert "required" not in components(schema)["Input"]


def test_training_with_a_class(schema_of: Callable[..., dict]) -> None:
    schema = schema_of(
        "class Predictor:\n    def predict(self) -> str:\n        return ''\n",
        cog_yaml="predict: predict.py:Predictor\ntrain: train.py:Trainer\n",
        **{
            "train.py": "from cog import Path\n\nclass Trainer:\n    def setup(self): ...\n    def train(self, data: Path, epochs: int = 3) -> Path:\n        ...\n"
        },
    )
    assert components(schema)["TrainingInput"]["required"] == ["data"]
    assert components(schema)["TrainingOutput"] == {
        "type": "string",
        "format": "uri",
        "title": "TrainingOutput",
    }
    assert "/trainings" in schema["paths"]


def test_document_is_a_fresh_copy(schema_of: Callable[..., dict]) -> None:
    source = "class Predictor:\n    def predict(self) -> str:\n        return ''\n"
    first = schema_of(source)
    first["components"]["schemas"]["ValidationError"]["title"] = "changed"
    assert (
        schema_of(source)["components"]["schemas"]["ValidationError"]["title"] == "ValidationError"
    )


# --- errors -------------------------------------------------------------------------------------

PRED = "from typing import Iterator, Optional\nfrom cog import BasePredictor, Input, Path, ConcatenateIterator\n\n\nclass Predictor(BasePredictor):\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "    def predict(self, x) -> str: ...\n",
            "predict.py:6: parameter 'x' of predict() has no type annotation",
        ),
        (
            "    def predict(self, x: int):\n        pass\n",
            "predict.py:6: predict() has no return type annotation (use -> Any if it varies)",
        ),
        (
            "    def predict(self) -> str: ...\n    def run(self) -> str: ...\n",
            "predict.py:5: Predictor defines both predict() and run(); keep one",
        ),
        (
            "    def setup(self) -> None: ...\n",
            "predict.py:5: Predictor has no predict() or run() method",
        ),
        (
            "    def predict(self, x: Tensor) -> str: ...\n",
            "predict.py:6: unknown type 'Tensor' (supported: str, int, float, bool, cog.Path, cog.File, cog.Secret, list[...], dict, Any, Optional[...], or a BaseModel defined in the package)",
        ),
        (
            "    def predict(self, x: Iterator[str]) -> str: ...\n",
            "predict.py:6: unsupported input type Iterator[str] for 'x'",
        ),
        (
            "    def predict(self, x: list[list[int]]) -> str: ...\n",
            "predict.py:6: unsupported input type list[list[int]] for 'x'",
        ),
        (
            "    def predict(self, x: tuple[int, int]) -> str: ...\n",
            "predict.py:6: unsupported type annotation 'tuple[int, int]'",
        ),
        (
            "    def predict(self) -> Optional[str]: ...\n",
            "predict.py:6: Optional is not allowed as a return type",
        ),
        (
            "    def predict(self) -> str | int: ...\n",
            "predict.py:6: unsupported output type str | int (unions)",
        ),
        (
            "    def predict(self) -> ConcatenateIterator[int]: ...\n",
            "predict.py:6: ConcatenateIterator must yield str, not int",
        ),
        (
            "    def predict(self, x: float = Input(choices=[1.0, 2.0])) -> str: ...\n",
            "predict.py:6: choices= can only be used with str or int inputs, not 'x' (float)",
        ),
        (
            "    def predict(self, x: str = Input(choices=['a', 2])) -> str: ...\n",
            "predict.py:6: choice 2 of 'x' is not a str",
        ),
        (
            "    def predict(self, x: str = Input(choices=[])) -> str: ...\n",
            "predict.py:6: choices= for 'x' must be a non-empty list",
        ),
        (
            "    def predict(self, x: int = Input(default=0, ge=1)) -> str: ...\n",
            "predict.py:6: default 0 of 'x' is less than ge=1",
        ),
        (
            "    def predict(self, x: float = Input(default=2.5, le=2)) -> str: ...\n",
            "predict.py:6: default 2.5 of 'x' is greater than le=2",
        ),
        (
            "    def predict(self, x: str = Input(default='c', choices=['a', 'b'])) -> str: ...\n",
            "predict.py:6: default 'c' of 'x' is not one of ['a', 'b']",
        ),
        (
            "    def predict(self, x: str = Input(default='', min_length=1)) -> str: ...\n",
            "predict.py:6: default '' of 'x' is shorter than min_length=1",
        ),
        (
            "    def predict(self, x: str = Input(default='abc', max_length=2)) -> str: ...\n",
            "predict.py:6: default 'abc' of 'x' is longer than max_length=2",
        ),
        (
            "    def predict(self, x: str = Input(default='b', regex='^a')) -> str: ...\n",
            "predict.py:6: default 'b' of 'x' does not match regex='^a'",
        ),
        (
            "    def predict(self, x: list[int] = Input(default=[], min_length=1)) -> str: ...\n",
            "predict.py:6: default [] of 'x' is shorter than min_length=1",
        ),
        (
            "    def predict(self, x: str = Input(regex='(')) -> str: ...\n",
            "predict.py:6: invalid regex '(': missing ), unterminated subpattern at position 0",
        ),
        (
            "    def predict(self, x: int = Input(ge='1')) -> str: ...\n",
            "predict.py:6: ge= must be a number, not '1'",
        ),
        (
            "    def predict(self, x: str = Input(max_length=2.5)) -> str: ...\n",
            "predict.py:6: max_length= must be an integer, not 2.5",
        ),
        (
            "    def predict(self, x: list[int] = Input(default_factory=list)) -> str: ...\n",
            "predict.py:6: Input(default_factory=...) is not supported; use default=",
        ),
        (
            "    def predict(self, x: int = Input(default=1, minimum=0)) -> str: ...\n",
            "predict.py:6: Input() got an unexpected keyword argument 'minimum'",
        ),
        (
            "    def predict(self, x: int = Input(1, 2)) -> str: ...\n",
            "predict.py:6: Input() takes at most one positional argument (the default)",
        ),
        (
            "    def predict(self, x: str = Input(accept='image/*')) -> str: ...\n",
            "predict.py:6: accept= only applies to Path or File inputs, not 'x'",
        ),
        (
            "    def predict(self, x: int = Input(default=get_default())) -> str: ...\n",
            "predict.py:6: cannot resolve default 'get_default()' statically (use a literal or a module-level constant)",
        ),
        (
            "    def predict(self, x: str = Input(choices=CHOICES)) -> str: ...\n",
            "predict.py:6: cannot resolve choices 'CHOICES' statically (use a literal or a module-level constant)",
        ),
        (
            "    def predict(self, *args: str) -> str: ...\n",
            "predict.py:6: predict() cannot take *args: every input must be a named parameter",
        ),
        (
            "    def predict(self, **kwargs: str) -> str: ...\n",
            "predict.py:6: predict() cannot take **kwargs: every input must be a named parameter",
        ),
        (
            "    def predict(self, x: 'list[') -> str: ...\n",
            "predict.py:6: invalid type annotation 'list['",
        ),
        (
            "    def predict(self) -> Predictor: ...\n",
            "predict.py:5: class 'Predictor' is not a BaseModel, dataclass or TypedDict, so it cannot be used as a type",
        ),
    ],
)
def test_generation_errors(error_of: Callable[..., str], body: str, expected: str) -> None:
    assert error_of(PRED + body) == expected


def test_type_imported_from_elsewhere(error_of: Callable[..., str]) -> None:
    source = (
        "from .shapes import Box\n\nclass Predictor:\n    def predict(self) -> Box:\n        ...\n"
    )
    assert error_of(source) == (
        "predict.py:4: cannot resolve type 'Box' (imported from '.shapes'): types are read "
        "statically, so define it in a file of the package as a BaseModel subclass, or mark a "
        "JSON-shaped type opaque: Annotated[Box, cog.Opaque]"
    )


def test_recursive_model(error_of: Callable[..., str]) -> None:
    source = "from cog import BaseModel\n\nclass Node(BaseModel):\n    children: list['Node']\n\ndef predict() -> Node:\n    ...\n"
    assert (
        error_of(source, cog_yaml="predict: predict.py:predict\n")
        == "predict.py:3: recursive type 'Node' is not supported"
    )


def test_error_in_training_file_names_it(error_of: Callable[..., str]) -> None:
    assert (
        error_of(
            "def predict() -> str:\n    return ''\n",
            cog_yaml="predict: predict.py:predict\ntrain: train/train.py:train\n",
            **{"train/train.py": "def train(steps: int = Input(default=5)) -> str:\n    ...\n"},
        )
        == "train/train.py:1: cannot resolve default 'Input(default=5)' statically (use a literal or a module-level constant)"
    )


def test_package_without_predictor(write_package: Writer) -> None:
    package = write_package({"cog.yaml": "build:\n  python_version: '3.11'\n"})
    with pytest.raises(CogSpecError) as excinfo:
        predictor_schema(package, load_config(package))
    assert str(excinfo.value) == "cog.yaml: no 'run' or 'predict' key: the package has no predictor"


def test_fstring_and_join_descriptions(schema_of: Callable[..., dict]) -> None:
    schema = schema_of(
        """
        from cog import Input

        SCHEDULERS = {"DDIM": None, "Euler": None}
        MAX = 8

        def predict(
            scheduler: str = Input(description=f"One of: {', '.join(SCHEDULERS)}.", default="DDIM"),
            n: int = Input(description=f"Between 1 and {MAX} ({MAX / 3:.1f} thirds, {'x'!r})", default=1),
        ) -> str:
            return scheduler
        """,
        cog_yaml="predict: predict.py:predict\n",
    )
    props = components(schema)["Input"]["properties"]
    assert props["scheduler"]["description"] == "One of: DDIM, Euler."
    assert props["n"]["description"] == "Between 1 and 8 (2.7 thirds, 'x')"


def test_unresolvable_imported_constant(error_of: Callable[..., str]) -> None:
    source = "from cog import Input\nfrom .constants import SIZES\n\ndef predict(w: int = Input(choices=SIZES)) -> int:\n    return w\n"
    assert error_of(source, cog_yaml="predict: predict.py:predict\n") == (
        "predict.py:4: cannot resolve choices 'SIZES' statically "
        "('SIZES' comes from '.constants'; use a constant defined in the package)"
    )


def test_choices_enums_with_clashing_names(schema_of: Callable[..., dict]) -> None:
    schema = schema_of(
        """
        from cog import Input

        def predict(
            scheduler: str = Input(choices=["a", "b"], default="a"),
            Status: int = Input(choices=[1, 2], default=1),
            same: str = Input(choices=["x"], default="x"),
        ) -> str:
            return scheduler
        """,
        cog_yaml="predict: predict.py:predict\ntrain: train.py:train\n",
        **{
            "train.py": (
                "from cog import Input\n\n"
                "def train(scheduler: str = Input(choices=['c'], default='c'), same: str = Input(choices=['x'])) -> str:\n"
                "    return scheduler\n"
            )
        },
    )
    schemas = components(schema)
    assert schemas["scheduler"]["enum"] == ["a", "b"]
    assert schemas["scheduler_2"] == {
        "type": "string",
        "enum": ["c"],
        "title": "scheduler",
        "description": "An enumeration.",
    }
    assert schemas["Status"]["enum"] == [
        "starting",
        "processing",
        "succeeded",
        "canceled",
        "failed",
    ]
    assert schemas["Status_2"] == {
        "type": "integer",
        "enum": [1, 2],
        "title": "Status",
        "description": "An enumeration.",
    }
    assert schemas["Input"]["properties"]["Status"]["allOf"] == [
        {"$ref": "#/components/schemas/Status_2"}
    ]
    assert schemas["TrainingInput"]["properties"]["scheduler"]["allOf"] == [
        {"$ref": "#/components/schemas/scheduler_2"}
    ]
    # Identical enums are shared, as pydantic does.
    assert schemas["TrainingInput"]["properties"]["same"]["allOf"] == [
        {"$ref": "#/components/schemas/same"}
    ]
    assert "same_2" not in schemas


def test_inputs_from_helper_functions_and_sibling_constants(schema_of: Callable[..., dict]) -> None:
    # The shape of Replicate's cog-comfyui: Input() built by helpers in the package's other files.
    schema = schema_of(
        """
        from cog import BasePredictor, Input
        from cog_model_helpers import optimise_images
        from helpers import seed_input
        from . import constants
        from constants import SIZES

        STEPS = Input(description="Steps", default=20, ge=1)
        SCHEDULERS = {"DDIM": None, "K_EULER": None}


        class Predictor(BasePredictor):
            def predict(
                self,
                output_format: str = optimise_images.predict_output_format(),
                seed: int = seed_input(),
                steps: int = STEPS,
                size: int = Input(choices=SIZES, default=constants.DEFAULT_SIZE),
                scheduler: str = Input(choices=SCHEDULERS.keys(), default="DDIM"),
                letters: str = Input(choices=sorted("cab"), default="a"),
            ) -> str:
                return ""
        """,
        **{
            "cog_model_helpers/__init__.py": "",
            "cog_model_helpers/optimise_images.py": """
                from cog import Input

                FORMAT_CHOICES = ["webp", "jpg", "png"]


                def predict_output_format() -> str:
                    \"\"\"The shared output_format input.\"\"\"
                    return Input(description="Format of the output images", choices=FORMAT_CHOICES, default="webp")
            """,
            "helpers.py": "import cog\n\ndef seed_input():\n    return cog.Input(description='Seed', default=None)\n",
            "constants.py": "SIZES = [512, 1024]\nDEFAULT_SIZE = SIZES[0]\n",
        },
    )
    props = components(schema)["Input"]["properties"]
    assert props["output_format"] == {
        "description": "Format of the output images",
        "default": "webp",
        "x-order": 0,
        "allOf": [{"$ref": "#/components/schemas/output_format"}],
    }
    assert components(schema)["output_format"]["enum"] == ["webp", "jpg", "png"]
    assert props["seed"] == {
        "type": "integer",
        "title": "Seed",
        "description": "Seed",
        "x-order": 1,
    }
    assert props["steps"] == {
        "type": "integer",
        "minimum": 1.0,
        "title": "Steps",
        "description": "Steps",
        "default": 20,
        "x-order": 2,
    }
    assert components(schema)["size"]["enum"] == [512, 1024]
    assert props["size"]["default"] == 512
    assert components(schema)["scheduler"]["enum"] == ["DDIM", "K_EULER"]
    assert components(schema)["letters"]["enum"] == ["a", "b", "c"]


def test_error_inside_a_helper_file_points_at_it(error_of: Callable[..., str]) -> None:
    message = error_of(
        "from cog import BasePredictor\nfrom helpers import fmt\n\nclass Predictor(BasePredictor):\n"
        "    def predict(self, f: str = fmt()) -> str:\n        return f\n",
        **{
            "helpers.py": "from cog import Input\n\n\ndef fmt():\n    return Input(choices=FORMATS)\n"
        },
    )
    assert (
        message
        == "helpers.py:5: cannot resolve choices 'FORMATS' statically (use a literal or a module-level constant)"
    )


def test_helpers_outside_the_package_are_not_followed(error_of: Callable[..., str]) -> None:
    message = error_of(
        "from cog import BasePredictor\nfrom shared_lib import fmt\n\nclass Predictor(BasePredictor):\n"
        "    def predict(self, f: str = fmt()) -> str:\n        return f\n"
    )
    assert (
        message
        == "predict.py:5: cannot resolve default 'fmt()' statically ('fmt' comes from 'shared_lib'; use a constant defined in the package)"
    )


def test_value_read_from_the_environment(error_of: Callable[..., str]) -> None:
    message = error_of(
        "import os\nfrom cog import BasePredictor, Input\n\nclass Predictor(BasePredictor):\n"
        "    def predict(self, p: str = Input(default=os.getenv('PROMPT', ''))) -> str:\n        return p\n"
    )
    assert message == (
        "predict.py:5: cannot resolve default \"os.getenv('PROMPT', '')\" statically "
        "('os' is an imported module; use a constant defined in the package)"
    )


def test_static_predict_method_has_no_self(schema_of: Callable[..., dict]) -> None:
    schema = schema_of(
        "class Predictor:\n    @staticmethod\n    def predict(text: str) -> str:\n        return text\n"
    )
    assert list(components(schema)["Input"]["properties"]) == ["text"]
