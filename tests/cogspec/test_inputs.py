"""Input validation and coercion against generated schemas, with Cog's 422 error shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from modelyard.cogspec.config import load_config
from modelyard.cogspec.inputs import FieldError, InputValidationError, file_fields, validate_input
from modelyard.cogspec.schema import predictor_schema

from .oracle import PACKAGES


def schema_for(name: str) -> dict[str, Any]:
    return predictor_schema(PACKAGES / name, load_config(PACKAGES / name))


SCALARS = schema_for("scalars")
REQUIRED = {"negative_prompt": "a cat", "count": 1, "label": "x"}


def errors_of(
    payload: object, schema: dict[str, Any] = SCALARS, component: str = "Input"
) -> list[FieldError]:
    with pytest.raises(InputValidationError) as excinfo:
        validate_input(schema, payload, component)
    return excinfo.value.errors


def loc(field: str, *rest: int) -> tuple[str | int, ...]:
    return ("body", "input", field, *rest)


def test_defaults_applied_unknown_dropped_optional_none() -> None:
    result = validate_input(SCALARS, {**REQUIRED, "unknown": 1, "steps": 10})
    assert result == {
        "prompt": "an astronaut riding a horse",
        "negative_prompt": "a cat",
        "max_new_tokens": 128,
        "temperature": 0.75,
        "top_p": 1,
        "offset": -3,
        "shift": -0.5,
        "steps": 10,
        "greeting": "hi",
        "seed": None,
        "verbose": False,
        "debug": True,
        "count": 1,
        "label": "x",
    }


def test_coercions() -> None:
    result = validate_input(
        SCALARS, {**REQUIRED, "temperature": 1, "count": 3.0, "max_new_tokens": 7}
    )
    assert result["temperature"] == 1.0 and isinstance(result["temperature"], float)
    assert result["count"] == 3 and isinstance(result["count"], int)


def test_missing_required_fields_all_reported() -> None:
    assert errors_of({}) == [
        FieldError(loc("negative_prompt"), "Field required", "value_error.missing"),
        FieldError(loc("count"), "Field required", "value_error.missing"),
        FieldError(loc("label"), "Field required", "value_error.missing"),
    ]


def test_none_payload_is_an_empty_input() -> None:
    assert [e.loc for e in errors_of(None)] == [loc("negative_prompt"), loc("count"), loc("label")]


@pytest.mark.parametrize("payload", ["text", [1, 2], 3])
def test_payload_must_be_an_object(payload: object) -> None:
    assert errors_of(payload) == [
        FieldError(("body", "input"), f"{payload!r} is not of type 'object'", "value_error")
    ]


@pytest.mark.parametrize(
    ("field", "value", "msg"),
    [
        ("max_new_tokens", 5000, "5000 is greater than the maximum of 4096"),
        ("max_new_tokens", 0, "0 is less than the minimum of 1"),
        ("temperature", 0.001, "0.001 is less than the minimum of 0.01"),
        ("offset", -11, "-11 is less than the minimum of -10"),
        ("count", "3", "'3' is not of type 'integer'"),
        ("count", 2.5, "2.5 is not of type 'integer'"),
        ("count", True, "True is not of type 'integer'"),
        ("temperature", "0.5", "'0.5' is not of type 'number'"),
        ("debug", 1, "1 is not of type 'boolean'"),
        ("debug", "true", "'true' is not of type 'boolean'"),
        ("prompt", "", "'' is too short"),
        ("prompt", "x" * 501, f"'{'x' * 501}' is too long"),
        ("prompt", 5, "5 is not of type 'string'"),
        ("negative_prompt", "Cat!", "'Cat!' does not match '^[a-z ]*$'"),
        ("count", None, "None is not of type 'integer'"),
    ],
)
def test_constraint_messages(field: str, value: object, msg: str) -> None:
    assert errors_of({**REQUIRED, field: value}) == [FieldError(loc(field), msg, "value_error")]


def test_all_errors_are_collected() -> None:
    errors = errors_of({"count": "x", "max_new_tokens": 9999, "negative_prompt": "ok"})
    assert [(e.loc[2], e.type) for e in errors] == [
        ("max_new_tokens", "value_error"),
        ("count", "value_error"),
        ("label", "value_error.missing"),
    ]


def test_error_detail_and_str() -> None:
    with pytest.raises(InputValidationError) as excinfo:
        validate_input(SCALARS, {**REQUIRED, "max_new_tokens": 5000, "label": None})
    assert excinfo.value.detail() == [
        {
            "loc": ["body", "input", "max_new_tokens"],
            "msg": "5000 is greater than the maximum of 4096",
            "type": "value_error",
        },
        {
            "loc": ["body", "input", "label"],
            "msg": "None is not of type 'string'",
            "type": "value_error",
        },
    ]
    assert str(excinfo.value) == (
        "max_new_tokens: 5000 is greater than the maximum of 4096; label: None is not of type 'string'"
    )


def test_choices() -> None:
    schema = schema_for("choices")
    assert validate_input(schema, {"mode": "fast", "width": 1024.0}) == {
        "scheduler": "K_EULER",
        "width": 1024,
        "height": 512,
        "mode": "fast",
        "style": None,
    }
    assert errors_of({"mode": "medium", "width": 500, "scheduler": 1}, schema) == [
        FieldError(loc("scheduler"), "1 is not of type 'string'", "value_error"),
        FieldError(loc("width"), "500 is not one of [512, 768, 1024]", "value_error"),
        FieldError(loc("mode"), "'medium' is not one of ['fast', 'slow']", "value_error"),
    ]


def test_files_lists_and_nullable() -> None:
    schema = schema_for("files")
    base = {
        "image": "https://example.com/a.png",
        "audio": "data:audio/wav;base64,AAAA",
        "images": [],
    }
    result = validate_input(schema, {**base, "reference": None, "images": ["/tmp/local.png"]})
    assert result == {
        **base,
        "images": ["/tmp/local.png"],
        "mask": None,
        "extra": [],
        "reference": None,
        "url": "https://example.com/cat.png",
    }
    assert errors_of({**base, "images": ["ok", 3, {"a": 1}], "image": 7, "mask": None}, schema) == [
        FieldError(loc("image"), "7 is not of type 'string'", "value_error"),
        FieldError(loc("mask"), "None is not of type 'string'", "value_error"),
        FieldError(loc("images", 1), "3 is not of type 'string'", "value_error"),
        FieldError(loc("images", 2), "{'a': 1} is not of type 'string'", "value_error"),
    ]
    assert errors_of({**base, "images": "one.png"}, schema) == [
        FieldError(loc("images"), "'one.png' is not of type 'array'", "value_error")
    ]


def test_file_fields() -> None:
    assert file_fields(schema_for("files")) == {
        "image": False,
        "mask": False,
        "audio": False,
        "images": True,
        "extra": True,
        "reference": False,
        "url": False,
    }
    assert file_fields(schema_for("train"), "TrainingInput") == {"input_images": False}
    assert file_fields(SCALARS) == {}


def test_optionals_secret_and_list_items() -> None:
    schema = schema_for("optionals")
    result = validate_input(
        schema, {"api_key": "s3cret", "tags": ["a", "b"], "prefix": None, "count": None}
    )
    assert result == {
        "prefix": None,
        "suffix": None,
        "seed": None,
        "plain_none": None,
        "tags": ["a", "b"],
        "count": None,
        "api_key": "s3cret",
        "hf_token": None,
        "maybe_token": None,
        "weights": [1, -2, 3],
    }
    assert errors_of({"api_key": 123, "weights": [1, "2", 3.5], "count": -1}, schema) == [
        FieldError(loc("count"), "-1 is less than the minimum of 0", "value_error"),
        FieldError(loc("api_key"), "123 is not of type 'string'", "value_error"),
        FieldError(loc("weights", 1), "'2' is not of type 'integer'", "value_error"),
        FieldError(loc("weights", 2), "3.5 is not of type 'integer'", "value_error"),
    ]


def test_union_input() -> None:
    schema = schema_for("union")
    assert validate_input(schema, {"value": "abc"}) == {"value": "abc", "scale": 1}
    assert validate_input(schema, {"value": 4.0}) == {"value": 4, "scale": 1}
    assert errors_of({"value": [1]}, schema) == [
        FieldError(loc("value"), "[1] is not valid under any of the given schemas", "value_error")
    ]


def test_training_component() -> None:
    schema = schema_for("train")
    assert validate_input(schema, {"input_images": "https://x/y.zip"}, "TrainingInput") == {
        "input_images": "https://x/y.zip",
        "steps": 1000,
        "learning_rate": 0.0004,
        "caption_prefix": "TOK",
    }
    assert errors_of(
        {"input_images": "z", "steps": 5, "caption_prefix": "x"}, schema, "TrainingInput"
    ) == [
        FieldError(loc("steps"), "5 is less than the minimum of 10", "value_error"),
        FieldError(
            loc("caption_prefix"), "'x' is not one of ['a photo of TOK', 'TOK']", "value_error"
        ),
    ]


def test_object_inputs_and_defaults_are_copies() -> None:
    schema = {
        "components": {
            "schemas": {
                "Input": {
                    "properties": {
                        "options": {"type": "object", "default": {"a": [1]}},
                        "anything": {"title": "Anything"},
                    },
                    "type": "object",
                }
            }
        }
    }
    first = validate_input(schema, {"anything": ["x"]})
    first["options"]["a"].append(2)
    assert validate_input(schema, {"anything": None}) == {"options": {"a": [1]}, "anything": None}
    assert errors_of({"options": "x"}, schema) == [
        FieldError(loc("options"), "'x' is not of type 'object'", "value_error")
    ]


def test_unknown_component() -> None:
    with pytest.raises(ValueError, match="the schema has no component 'TrainingInput'"):
        validate_input(SCALARS, {}, "TrainingInput")


def test_list_lengths() -> None:
    schema = schema_for("lists_secrets")
    assert validate_input(schema, {"sizes": [1, 2]}) == {
        "api_key": "sk-default",
        "tags": ["a"],
        "sizes": [1, 2],
        "image": None,
    }
    assert errors_of({"sizes": [1], "tags": ["a", "b", "c", "d"]}, schema) == [
        FieldError(loc("tags"), "['a', 'b', 'c', 'd'] is too long", "value_error"),
        FieldError(loc("sizes"), "[1] is too short", "value_error"),
    ]


@pytest.mark.parametrize(("text", "spelled"), [
    ("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"),
])
@pytest.mark.parametrize("field", ["temperature", "count", "prompt"])
def test_non_finite_numbers_are_refused(field: str, text: str, spelled: str) -> None:
    # Python's json reads NaN and Infinity; they could not be written back as JSON.
    payload = json.loads(f'{{"{field}": {text}}}')
    assert errors_of({**REQUIRED, **payload}) == [
        FieldError(loc(field), f"{spelled} is not a finite number", "value_error")
    ]


def test_non_finite_numbers_inside_lists_and_objects() -> None:
    schema = {
        "components": {
            "schemas": {
                "Input": {
                    "properties": {"options": {"type": "object"}, "anything": {"title": "Anything"}},
                    "type": "object",
                }
            }
        }
    }
    payload = json.loads('{"options": {"a": [1, NaN]}, "anything": [Infinity]}')
    assert errors_of(payload, schema) == [
        FieldError(("body", "input", "options", "a", 1), "NaN is not a finite number", "value_error"),
        FieldError(("body", "input", "anything", 0), "Infinity is not a finite number", "value_error"),
    ]


def test_numbers_too_large_for_a_float() -> None:
    payload = json.loads('{"temperature": 1' + "0" * 400 + ', "top_p": -' + "9" * 30 + "}")
    assert errors_of({**REQUIRED, **payload}) == [
        FieldError(
            loc("temperature"),
            "10000000000000000000...00000000 (401 digits) is too large for a number",
            "value_error",
        ),
        FieldError(loc("top_p"), f"-{'9' * 30} is less than the minimum of 0", "value_error"),
    ]
    # an integer input holds any integer
    assert validate_input(SCALARS, {**REQUIRED, "count": 10**400})["count"] == 10**400
