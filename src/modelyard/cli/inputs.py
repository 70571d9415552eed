"""Turning `-i name=value` options into a JSON input, typed by the model's schema (as Cog's CLI does).

The rules follow Cog's CLI (`pkg/predict/input.go` and `input_validation.go` of
github.com/replicate/cog): a name the model does not declare is refused before anything starts
(`unknown input "wrong"; valid inputs are: ...`); a value is converted by its input's type; a union
input (`anyOf`) is typed by its members: `true`/`false` become a boolean when a member is boolean,
a whole number an integer when a member is an integer or number, any other number a float when a
member is a number, each only when the union accepts the result (else the text stays a string).
"""

from __future__ import annotations

import difflib
import json
import math
import re
from pathlib import Path
from typing import Any

from modelyard.cogspec.inputs import accepts, resolve_schema


class InputOptionError(ValueError):
    """An `-i` option that cannot be read; the message names it."""


_INTEGER = re.compile(r"[+-]?\d+")


def parse_input_options(
    options: list[str], schema: dict[str, Any], component: str
) -> dict[str, Any]:
    """`["prompt=a cat", "image=@photo.png", "n=3"]` to `{"prompt": "a cat", "image": "/abs/photo.png", "n": 3}`.

    Values are converted by the input's schema type; an array input may be given several times.
    `@path` names a local file for file inputs. A name the model does not declare is an error (the
    API drops unknown names silently; on the command line they are typos).
    """
    properties = schema["components"]["schemas"][component].get("properties", {})
    schemas = schema["components"]["schemas"]
    given: dict[str, list[str]] = {}
    for option in options:
        name, sep, raw = option.partition("=")
        if not sep or not name:
            raise InputOptionError(f"-i {option!r}: expected name=value")
        given.setdefault(name, []).append(raw)
    _check_names(list(given), list(properties))
    result: dict[str, Any] = {}
    for name, values in given.items():
        prop = properties[name]
        spec = resolve_schema(prop, schemas)
        if len(values) > 1:
            item = _array_items(spec, schemas)
            if item is None:
                raise InputOptionError(f"-i {name}: given more than once but it is not a list")
            result[name] = [_convert(name, raw, item, schemas) for raw in values]
        else:
            result[name] = _single(name, values[0], spec, schemas)
    return result


def _check_names(names: list[str], known: list[str]) -> None:
    """Cog's CLI message for undeclared names, with a did-you-mean for a near miss."""
    unknown = sorted(n for n in names if n not in known)
    if not unknown:
        return
    valid = sorted(known)
    suffix = f"valid inputs are: {', '.join(valid)}" if valid else "model does not accept inputs"
    if len(unknown) > 1:
        quoted = ", ".join(json.dumps(n) for n in unknown)
        raise InputOptionError(f"unknown inputs {quoted}; {suffix}")
    close = difflib.get_close_matches(unknown[0], valid, n=1)
    hint = f" (did you mean {json.dumps(close[0])}?)" if close else ""
    raise InputOptionError(f"unknown input {json.dumps(unknown[0])}{hint}; {suffix}")


def _array_items(spec: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any] | None:
    """The item schema when the input takes a list (for a union, the items of its list members)."""
    if spec.get("type") == "array":
        return resolve_schema(spec.get("items") or {}, schemas)
    members = [resolve_schema(v, schemas) for v in spec.get("anyOf", ())]
    items = [
        resolve_schema(m.get("items") or {}, schemas) for m in members if m.get("type") == "array"
    ]
    if not items:
        return None
    return items[0] if len(items) == 1 else {"anyOf": items}


def _single(name: str, raw: str, spec: dict[str, Any], schemas: dict[str, Any]) -> Any:
    if "anyOf" in spec:
        return _union(name, raw, spec, schemas)
    if spec.get("type") == "array":
        # A JSON list (`-i nums=[1,2]`) is the whole value, as in Cog; anything else one item.
        parsed = _json(raw)
        if isinstance(parsed, list):
            return parsed
        return [_convert(name, raw, resolve_schema(spec.get("items") or {}, schemas), schemas)]
    return _convert(name, raw, spec, schemas)


def _convert(name: str, raw: str, prop: dict[str, Any], schemas: dict[str, Any]) -> Any:
    if "anyOf" in prop:
        return _union(name, raw, prop, schemas)
    kind = prop.get("type")
    try:
        if prop.get("format") == "uri":
            if raw.startswith("@"):
                path = Path(raw[1:]).expanduser()
                if not path.is_file():
                    raise InputOptionError(f"-i {name}: no such file: {raw[1:]}")
                return str(path.resolve())
            return raw
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
        if kind == "boolean":
            lowered = raw.lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise InputOptionError(f"-i {name}: expected true or false, got {raw!r}")
            return lowered in ("true", "1", "yes")
        if kind == "object":
            return json.loads(raw)
    except ValueError as exc:
        if isinstance(exc, InputOptionError):
            raise
        raise InputOptionError(f"-i {name}: {raw!r} is not a valid {kind}") from None
    return raw


def _union(name: str, raw: str, spec: dict[str, Any], schemas: dict[str, Any]) -> Any:
    """A value for a union input, typed as Cog's CLI does (`newSingleInput`): by its first typed
    member (an object member reads JSON, a list member a JSON list or one item), else as a scalar
    that the union accepts."""
    members = [resolve_schema(m, schemas) for m in spec["anyOf"]]
    types = _member_types(members, schemas)
    first = next((m.get("type") for m in members if m.get("type")), None)
    if first == "object":
        parsed = _json(raw)
        if isinstance(parsed, dict) or "string" not in types:
            if not isinstance(parsed, dict):
                raise InputOptionError(f"-i {name}: {raw!r} is not a valid JSON object")
            return parsed
        return raw
    parsed = _json(raw)
    if "array" in types and isinstance(parsed, list) and accepts(parsed, spec, schemas):
        # Cog reads a JSON list only when a list member comes first; any list member will do here.
        return parsed
    if first == "array":
        if "string" in types and accepts(raw, spec, schemas):
            return raw
        items = _array_items(spec, schemas)
        one = [_scalar(raw, items or {}, schemas)]
        return raw if "string" in types and not accepts(one, spec, schemas) else one
    return _scalar(raw, spec, schemas)


def _scalar(raw: str, spec: dict[str, Any], schemas: dict[str, Any]) -> Any:
    """Cog's `coerceScalarValue`: a boolean, integer or float candidate where the schema has such a
    member, kept when the schema accepts it (or cannot take the text as a string)."""
    members = [resolve_schema(m, schemas) for m in spec.get("anyOf", ())] or [spec]
    types = _member_types(members, schemas)

    def usable(candidate: Any) -> bool:
        return "string" not in types or accepts(candidate, spec, schemas)

    if raw in ("true", "false") and "boolean" in types and usable(raw == "true"):
        return raw == "true"
    if not types & {"integer", "number"}:
        return raw
    if _INTEGER.fullmatch(raw) and usable(int(raw)):
        return int(raw)
    if "number" not in types:
        return raw
    try:
        number = float(raw)
    except ValueError:
        return raw
    if math.isfinite(number) and usable(number):
        return number
    return raw


def _member_types(members: list[dict[str, Any]], schemas: dict[str, Any]) -> set[str]:
    types: set[str] = set()
    for member in members:
        if member.get("type"):
            types.add(member["type"])
        types |= _member_types(
            [resolve_schema(m, schemas) for m in member.get("anyOf", ())], schemas
        )
    return types


def _json(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
