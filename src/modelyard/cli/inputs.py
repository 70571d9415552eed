"""Turning `-i name=value` options into a JSON input, typed by the model's schema (as Cog's CLI does)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelyard.cogspec.inputs import resolve_schema


class InputOptionError(ValueError):
    """An `-i` option that cannot be read; the message names it."""


def parse_input_options(options: list[str], schema: dict[str, Any], component: str) -> dict[str, Any]:
    """`["prompt=a cat", "image=@photo.png", "n=3"]` to `{"prompt": "a cat", "image": "/abs/photo.png", "n": 3}`.

    Values are converted by the input's schema type; an array input may be given several times.
    `@path` names a local file for file inputs. Unknown names pass through as strings, so the
    server-side rules (unknown inputs are ignored) decide what happens to them.
    """
    properties = schema["components"]["schemas"][component].get("properties", {})
    schemas = schema["components"]["schemas"]
    result: dict[str, Any] = {}
    for option in options:
        name, sep, raw = option.partition("=")
        if not sep or not name:
            raise InputOptionError(f"-i {option!r}: expected name=value")
        prop = resolve_schema(properties.get(name, {}), schemas)
        if prop.get("type") == "array":
            item = resolve_schema(prop.get("items", {}), schemas)
            result.setdefault(name, []).append(_convert(name, raw, item))
        else:
            if name in result:
                raise InputOptionError(f"-i {name}: given more than once but it is not a list")
            result[name] = _convert(name, raw, prop)
    return result


def _convert(name: str, raw: str, prop: dict[str, Any]) -> Any:
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
