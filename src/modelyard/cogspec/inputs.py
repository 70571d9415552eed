"""Validating and coercing a prediction's ``input`` against the model's schema.

Cog's server validates at the HTTP edge with JSON Schema (coglet) or pydantic (0.16); this module
does the same job in plain Python over the subset of JSON Schema that Cog's generator emits (type,
format, enum via ``allOf``/``$ref``, minimum/maximum, minLength/maxLength, minItems/maxItems,
pattern, items, anyOf, nullable), and reports problems in Cog's 422 shape:
``loc = ("body", "input", field[, index])``, ``msg`` in JSON-Schema wording (``"11 is greater than
the maximum of 10"``), ``type`` ``value_error`` (or ``value_error.missing`` with ``"Field
required"``). Every field is checked, so one answer lists every problem.

The result holds every declared input: the given (coerced) value, else the schema default, else
``None`` for an optional input, so the worker can call ``predict(**inputs)`` without consulting the
signature. Unknown fields are dropped, as Cog does.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any

_REF_PREFIX = "#/components/schemas/"
_MISSING = object()


@dataclass(frozen=True)
class FieldError:
    """One problem with one input, in Cog's 422 ``detail`` item shape."""

    loc: tuple[str | int, ...]
    msg: str
    type: str

    def as_dict(self) -> dict[str, Any]:
        """``{"loc": [...], "msg": ..., "type": ...}`` as Cog's 422 body lists it."""
        return {"loc": list(self.loc), "msg": self.msg, "type": self.type}


class InputValidationError(Exception):
    """The input was refused; ``errors`` lists every problem found."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        return "; ".join(
            f"{'.'.join(str(p) for p in e.loc[2:]) or 'input'}: {e.msg}" for e in self.errors
        )

    def detail(self) -> list[dict[str, Any]]:
        """The ``detail`` list of Cog's 422 response body."""
        return [e.as_dict() for e in self.errors]


def _component(schema: dict[str, Any], component: str) -> dict[str, Any]:
    try:
        return schema["components"]["schemas"][component]
    except (KeyError, TypeError):
        raise ValueError(f"the schema has no component {component!r}") from None


def validate_input(
    schema: dict[str, Any], payload: object, component: str = "Input"
) -> dict[str, Any]:
    """Validate ``payload`` against ``components.schemas[component]`` and return the coerced input.

    ``None`` counts as ``{}`` (Cog treats a missing or null ``input`` that way). Raises
    :class:`InputValidationError` with every problem found.
    """
    spec = _component(schema, component)
    schemas = schema["components"]["schemas"]
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise InputValidationError(
            [
                FieldError(
                    ("body", "input"), f"{_repr(payload)} is not of type 'object'", "value_error"
                )
            ]
        )
    required = set(spec.get("required", ()))
    result: dict[str, Any] = {}
    errors: list[FieldError] = []
    for name, prop in spec.get("properties", {}).items():
        loc: tuple[str | int, ...] = ("body", "input", name)
        if name not in payload:
            if name in required:
                errors.append(FieldError(loc, "Field required", "value_error.missing"))
            else:
                result[name] = copy.deepcopy(prop["default"]) if "default" in prop else None
            continue
        bad = _non_finite(payload[name], loc)
        if bad is not None:  # NaN/Infinity (Python's json reads them) cannot be encoded back
            errors.append(_error(bad[0], f"{_json_float(bad[1])} is not a finite number"))
            result[name] = payload[name]
            continue
        value, problems = _check(payload[name], prop, schemas, loc)
        errors.extend(problems)
        result[name] = value
    if errors:
        raise InputValidationError(errors)
    return result


def input_component(mode: str) -> str:
    """The schema component a package's `predict` (`run`) or `train` entry takes its input from."""
    return "TrainingInput" if mode == "train" else "Input"


def file_fields(schema: dict[str, Any], component: str = "Input") -> dict[str, bool]:
    """Inputs holding files (``format: uri``: ``cog.Path``/``cog.File``) -> whether each is a list.

    These are the values the runtime downloads before calling the predictor.
    """
    fields = {}
    for name, prop in _component(schema, component).get("properties", {}).items():
        if prop.get("format") == "uri":
            fields[name] = False
        elif prop.get("type") == "array" and (prop.get("items") or {}).get("format") == "uri":
            fields[name] = True
    return fields


def resolve_schema(prop: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """Merge ``allOf``/``$ref`` parts into one flat schema (Cog uses them only for enums).

    Keys of ``prop`` itself win over those of the parts; parts' titles and descriptions are dropped.
    """
    merged = {k: v for k, v in prop.items() if k not in ("allOf", "$ref")}
    parts = list(prop.get("allOf", ()))
    if "$ref" in prop:
        parts.append({"$ref": prop["$ref"]})
    for part in parts:
        ref = part.get("$ref", "")
        target = schemas.get(ref[len(_REF_PREFIX) :], {}) if ref.startswith(_REF_PREFIX) else part
        for key, value in resolve_schema(target, schemas).items():
            if key not in ("title", "description"):
                merged.setdefault(key, value)
    return merged


def accepts(value: Any, prop: dict[str, Any], schemas: dict[str, Any]) -> bool:
    """Whether one input property's schema accepts ``value`` (the CLI asks this to type an
    ``-i name=value`` for a union input, as Cog's CLI does)."""
    return not _check(value, prop, schemas, ())[1]


def _check(
    value: Any, prop: dict[str, Any], schemas: dict[str, Any], loc: tuple[str | int, ...]
) -> tuple[Any, list[FieldError]]:
    """Validate one value; return it coerced (ints for integral floats, floats for numbers)."""
    spec = resolve_schema(prop, schemas)
    if value is None:
        if spec.get("nullable"):
            return None, []
        expected = spec.get("type")
        if expected is None and "anyOf" not in spec:
            return None, []
        return None, [
            _error(
                loc,
                f"None is not of type {expected!r}"
                if expected
                else "None is not valid under any of the given schemas",
            )
        ]
    if "anyOf" in spec:
        for variant in spec["anyOf"]:
            coerced, problems = _check(value, variant, schemas, loc)
            if not problems:
                return coerced, []
        return value, [_error(loc, f"{_repr(value)} is not valid under any of the given schemas")]
    given = _repr(value)  # messages quote the value as sent, before coercion
    expected = spec.get("type")
    if expected == "number" and isinstance(value, int) and not _fits_float(value):
        return value, [_error(loc, f"{_abbreviate(given)} is too large for a number")]
    if expected is not None:
        ok, value = _coerce(value, expected)
        if not ok:
            return value, [_error(loc, f"{given} is not of type {expected!r}")]
    errors = []
    if "enum" in spec and value not in spec["enum"]:
        errors.append(_error(loc, f"{given} is not one of {spec['enum']!r}"))
    if _is_number(value):
        if "minimum" in spec and value < spec["minimum"]:
            limit = _num(spec["minimum"])
            errors.append(_error(loc, f"{given} is less than the minimum of {limit}"))
        if "maximum" in spec and value > spec["maximum"]:
            limit = _num(spec["maximum"])
            errors.append(_error(loc, f"{given} is greater than the maximum of {limit}"))
    if isinstance(value, str):
        if "minLength" in spec and len(value) < spec["minLength"]:
            errors.append(_error(loc, f"{given} is too short"))
        if "maxLength" in spec and len(value) > spec["maxLength"]:
            errors.append(_error(loc, f"{given} is too long"))
        if "pattern" in spec and not re.search(spec["pattern"], value):
            errors.append(_error(loc, f"{given} does not match {spec['pattern']!r}"))
    if isinstance(value, list):
        if "minItems" in spec and len(value) < spec["minItems"]:
            errors.append(_error(loc, f"{given} is too short"))
        if "maxItems" in spec and len(value) > spec["maxItems"]:
            errors.append(_error(loc, f"{given} is too long"))
    if isinstance(value, list) and isinstance(spec.get("items"), dict) and spec["items"]:
        items = []
        for index, item in enumerate(value):
            coerced, problems = _check(item, spec["items"], schemas, (*loc, index))
            items.append(coerced)
            errors.extend(problems)
        value = items
    return value, errors


def _coerce(value: Any, expected: str) -> tuple[bool, Any]:
    if expected == "string":
        return isinstance(value, str), value
    if expected == "boolean":  # strict: no 0/1, no "true"
        return isinstance(value, bool), value
    if expected == "integer":
        # JSON Schema counts 3.0 as an integer; pydantic (Cog 0.16) accepted it too.
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return isinstance(value, int) and not isinstance(value, bool), value
    if expected == "number":
        return (True, float(value)) if _is_number(value) else (False, value)
    if expected == "array":
        return isinstance(value, list), value
    if expected == "object":
        return isinstance(value, dict), value
    return True, value


def _non_finite(
    value: Any, loc: tuple[str | int, ...]
) -> tuple[tuple[str | int, ...], float] | None:
    """Where a NaN or infinite float is inside ``value`` (lists and objects searched), and it."""
    if isinstance(value, float) and not math.isfinite(value):
        return loc, value
    items = (
        value.items()
        if isinstance(value, dict)
        else enumerate(value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        found = _non_finite(item, (*loc, key))
        if found is not None:
            return found
    return None


def _json_float(value: float) -> str:
    """A non-finite float as JSON extensions spell it: NaN, Infinity, -Infinity."""
    return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"


def _fits_float(value: int) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _abbreviate(digits: str) -> str:
    """A huge integer's text, shortened: ``10000000000000000000...00000000 (401 digits)``."""
    count = len(digits.lstrip("-"))
    return digits if len(digits) <= 40 else f"{digits[:20]}...{digits[-8:]} ({count} digits)"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(limit: Any) -> str:
    # Cog 0.16 writes limits as floats (10.0); messages read better as "the maximum of 10".
    return str(int(limit)) if isinstance(limit, float) and limit.is_integer() else repr(limit)


def _repr(value: Any) -> str:
    # Python's repr, as the jsonschema package words its messages: 'abc', None, True, [1, 2].
    return repr(value)


def _error(loc: tuple[str | int, ...], msg: str) -> FieldError:
    return FieldError(loc, msg, "value_error")
