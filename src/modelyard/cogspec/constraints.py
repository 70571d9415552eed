"""Which types an input may have, and the rules of ``Input(...)``: constraints (``ge``, ``le``,
lengths, ``regex``) as schema keywords, ``choices`` as an enum, and defaults that their own rules
would refuse. Cog's generators (0.16's pydantic one and the Go one) are followed; each rule notes
whose it is."""

from __future__ import annotations

import ast
import re
from dataclasses import replace
from typing import Any

from .annotations import JSON_NATIVE, SCALARS, CogType
from .source import ModuleSource

INPUT_KINDS = (*SCALARS, "path", "file", "secret", "any", "dict")


def typed_dicts_as_objects(ctype: CogType) -> CogType:
    """An input annotated with a ``TypedDict`` (alone, in a list or in a union) is an opaque JSON
    object, ``{"type": "object"}``, as in Cog's generator (``resolveInputType``: TypedDict ->
    ``InputAnyType``); the predictor receives the dict as sent."""
    if ctype.kind == "object" and ctype.style == "typeddict":
        return CogType("any", nullable=ctype.nullable)
    if ctype.item is not None and ctype.kind == "list":
        return replace(ctype, item=typed_dicts_as_objects(ctype.item))
    if ctype.kind == "union":
        return replace(ctype, variants=tuple(typed_dicts_as_objects(v) for v in ctype.variants))
    return ctype


def check_input_type(ctype: CogType, name: str, module: ModuleSource, node: ast.AST) -> None:
    """Refuse a type Cog does not take as an input (an iterator, a model, a list of lists...)."""
    ok = ctype.kind in INPUT_KINDS
    if ctype.kind == "list":
        ok = ctype.item is None or (ctype.item.kind in INPUT_KINDS and not ctype.item.nullable)
    if ctype.kind == "union":
        # Cog's generator (validateUnionVariant): JSON-native members, lists of them included
        # (`str | list[str]`, `list[int] | list[float]`); no files, secrets or nested lists.
        ok = all(_union_member(v) for v in ctype.variants)
    if not ok:
        raise module.error(f"unsupported input type {ctype.describe()} for {name!r}", node)


def _union_member(t: CogType) -> bool:
    if t.nullable or t.kind not in JSON_NATIVE:
        return False
    if t.kind == "list" and t.item is not None:
        return not t.item.nullable and t.item.kind in (*SCALARS, "any", "dict")
    return True


def add_constraints(
    prop: dict[str, Any],
    options: dict[str, Any],
    ctype: CogType,
    module: ModuleSource,
    node: ast.AST,
) -> None:
    """Put ``ge``/``le``/``min_length``/``max_length``/``regex`` into ``prop`` as schema keywords."""
    # Cog 0.16 renders ge/le as floats (pydantic's Field takes floats): "minimum": 1.0.
    for key, schema_key in (("le", "maximum"), ("ge", "minimum")):
        if options.get(key) is not None:
            if not isinstance(options[key], (int, float)) or isinstance(options[key], bool):
                raise module.error(f"{key}= must be a number, not {options[key]!r}", node)
            prop[schema_key] = float(options[key])
    # On a list, pydantic (and so Cog 0.16) turns min_length/max_length into minItems/maxItems.
    lengths = ("maxItems", "minItems") if ctype.kind == "list" else ("maxLength", "minLength")
    for key, schema_key in zip(("max_length", "min_length"), lengths, strict=True):
        if options.get(key) is not None:
            if not isinstance(options[key], int) or isinstance(options[key], bool):
                raise module.error(f"{key}= must be an integer, not {options[key]!r}", node)
            prop[schema_key] = options[key]
    if options.get("regex") is not None:
        try:
            re.compile(options["regex"])
        except (re.error, TypeError) as exc:
            raise module.error(f"invalid regex {options['regex']!r}: {exc}", node) from None
        prop["pattern"] = options["regex"]


def choices_enum(
    ctype: CogType, name: str, choices: Any, module: ModuleSource, node: ast.AST
) -> dict[str, Any]:
    """The enum component of a ``choices=`` input (str or int only, as in Cog)."""
    if ctype.kind not in ("str", "int"):
        raise module.error(
            f"choices= can only be used with str or int inputs, not {name!r} ({ctype.describe()})",
            node,
        )
    want = str if ctype.kind == "str" else int
    if not isinstance(choices, list) or not choices:
        raise module.error(f"choices= for {name!r} must be a non-empty list", node)
    for choice in choices:
        if not isinstance(choice, want) or isinstance(choice, bool):
            raise module.error(f"choice {choice!r} of {name!r} is not a {ctype.kind}", node)
    kind = "string" if ctype.kind == "str" else "integer"
    return {"type": kind, "enum": choices, "title": name, "description": "An enumeration."}


def check_default(
    value: Any,
    options: dict[str, Any],
    ctype: CogType,
    module: ModuleSource,
    node: ast.AST,
    name: str,
) -> None:
    """Reject a default that its own constraints would refuse (as Cog's Go generator does)."""
    problem = None
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if options.get("choices") is not None and value not in options["choices"]:
        problem = f"is not one of {options['choices']!r}"
    elif number and options.get("ge") is not None and value < options["ge"]:
        problem = f"is less than ge={options['ge']!r}"
    elif number and options.get("le") is not None and value > options["le"]:
        problem = f"is greater than le={options['le']!r}"
    elif isinstance(value, (str, list)):
        if options.get("min_length") is not None and len(value) < options["min_length"]:
            problem = f"is shorter than min_length={options['min_length']!r}"
        elif options.get("max_length") is not None and len(value) > options["max_length"]:
            problem = f"is longer than max_length={options['max_length']!r}"
        elif (
            isinstance(value, str)
            and options.get("regex")
            and not re.search(options["regex"], value)
        ):
            problem = f"does not match regex={options['regex']!r}"
    if problem:
        raise module.error(f"default {value!r} of {name!r} {problem}", node)
