"""JSON schemas of resolved types (:class:`~.annotations.CogType`), rendered the way Cog's legacy
(pydantic) generator does; where the input and output sides differ (``Any``, ``dict``), ``where``
says which one is asked for."""

from __future__ import annotations

from typing import Any

from .annotations import NO_DEFAULT, CogType


def type_schema(t: CogType, where: str) -> dict[str, Any]:
    """The JSON schema of ``t`` without ``title``; ``where`` is ``"input"`` or ``"output"``,
    because Cog renders ``Any`` and ``dict`` differently on each side."""
    out: dict[str, Any]
    if t.kind == "str":
        out = {"type": "string"}
    elif t.kind == "int":
        out = {"type": "integer"}
    elif t.kind == "float":
        out = {"type": "number"}
    elif t.kind == "bool":
        out = {"type": "boolean"}
    elif t.kind in ("path", "file"):
        out = {"type": "string", "format": "uri"}
    elif t.kind == "secret":
        out = {"type": "string", "format": "password", "writeOnly": True, "x-cog-secret": True}
    elif t.kind == "any":
        out = {"type": "object"} if where == "input" else {}
    elif t.kind == "dict":
        if where == "input":
            out = {"type": "object"}
        elif t.item is not None:
            out = {"additionalProperties": type_schema(t.item, where), "type": "object"}
        else:
            out = {"additionalProperties": True, "type": "object"}
    elif t.kind in ("list", "iterator", "concat"):
        items = type_schema(t.item, where) if t.item is not None else {}
        out = {"items": items, "type": "array"}
        if t.kind == "concat":
            out["x-cog-array-display"] = "concatenate"
        if t.kind in ("iterator", "concat"):
            out["x-cog-array-type"] = "iterator"
    elif t.kind == "union":
        out = {"anyOf": [type_schema(v, where) for v in t.variants]}
    elif t.kind == "object":
        out = object_schema(t, where)
    else:  # pragma: no cover - every kind is handled above
        raise ValueError(f"unknown kind {t.kind}")
    if t.nullable:
        out["nullable"] = True
    return out


def object_schema(t: CogType, where: str) -> dict[str, Any]:
    """``{"properties": ..., "type": "object", "required": [...]}`` for a model type."""
    properties: dict[str, Any] = {}
    for f in t.fields:
        prop = type_schema(f.type, where)
        prop["title"] = title(f.name)
        if f.default is not NO_DEFAULT and f.default is not None:
            prop["default"] = f.default
        properties[f.name] = prop
    out: dict[str, Any] = {"properties": properties, "type": "object"}
    required = [f.name for f in t.fields if f.required]
    if required:
        out["required"] = required
    return out


def title(name: str) -> str:
    """Pydantic's field title, which Cog's schemas carry: ``max_new_tokens`` -> ``Max New Tokens``."""
    return name.title().replace("_", " ").strip()
