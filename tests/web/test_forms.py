"""The Playground's fields, generated from the schemas of the runtime's fixtures: every input
type gets its widget and the constraints the server checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelyard.cogspec.config import load_config
from modelyard.cogspec.schema import predictor_schema
from modelyard.web.forms import Field, form_fields

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def fields_of(fixture: str, component: str = "Input") -> dict[str, Field]:
    package = FIXTURES / fixture
    schema = predictor_schema(package, load_config(package))
    return {f.name: f for f in form_fields(schema, component)}


@pytest.mark.parametrize(
    ("fixture", "name", "widget", "kind"),
    [
        ("input_scalars", "text", "textarea", "string"),  # named like a prompt
        ("input_scalars", "count", "number", "integer"),
        ("input_scalars", "ratio", "number", "number"),
        ("input_scalars", "flag", "checkbox", "boolean"),
        ("constraints_numeric", "steps", "range", "integer"),  # bounded: a slider too
        ("constraints_numeric", "temperature", "range", "number"),
        ("constraints_string", "word", "text", "string"),
        ("choices", "scheduler", "select", "string"),
        ("choices", "steps", "select", "integer"),
        ("input_secret", "api_key", "password", "string"),
        ("input_path", "document", "file", "string"),
        ("accept_input", "image", "file", "string"),
        ("input_path_list", "documents", "files", "array"),
        ("input_lists", "names", "list", "array"),
        ("input_optional", "prefix", "text", "string"),
    ],
)
def test_every_input_type_gets_its_widget(fixture: str, name: str, widget: str, kind: str) -> None:
    field = fields_of(fixture)[name]
    assert (field.widget, field.type) == (widget, kind)


def test_constraints_defaults_and_order_come_from_the_schema() -> None:
    numeric = fields_of("constraints_numeric")
    assert list(numeric) == ["steps", "temperature"]  # x-order
    steps = numeric["steps"]
    assert (steps.minimum, steps.maximum, steps.step, steps.required) == (1, 10, "1", True)
    temperature = numeric["temperature"]
    assert (temperature.default, temperature.step, temperature.required) == (0.5, "any", False)
    word, code = fields_of("constraints_string").values()
    assert (word.min_length, word.max_length) == (2, 5)
    assert (code.pattern, code.default_text) == ("^[a-z]+$", "abc")
    choices = fields_of("choices")
    assert choices["scheduler"].choices == ["ddim", "euler", "k_lms"]
    assert choices["scheduler"].default == "euler"
    assert choices["steps"].choices == [10, 20, 50]
    assert fields_of("accept_input")["image"].accept == "image/png,.txt"
    numbers = fields_of("input_lists")["numbers"]
    assert (numbers.item_type, numbers.default_text, numbers.step) == ("integer", "1\n2", "1")
    assert fields_of("input_scalars")["flag"].description == "A switch"
    assert fields_of("input_optional")["count"].required is False


def test_training_inputs_have_fields_too() -> None:
    fields = fields_of("train_function", "TrainingInput")
    assert fields, "a train: entry declares its inputs"
    assert form_fields({}, "TrainingInput") == []


def test_objects_unions_and_nested_lists_get_a_json_box() -> None:
    schema = {"components": {"schemas": {"Input": {"properties": {
        "options": {"type": "object", "title": "Options", "x-order": 0},
        "either": {"anyOf": [{"type": "string"}, {"type": "integer"}], "x-order": 1},
        "boxes": {"type": "array", "items": {"type": "object"}, "x-order": 2},
        "tags": {"type": "array", "items": {"type": "string"}, "x-order": 3},
    }}}}}  # fmt: skip
    widgets = {f.name: f.widget for f in form_fields(schema)}
    assert widgets == {"options": "json", "either": "json", "boxes": "json", "tags": "list"}
