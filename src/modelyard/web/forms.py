"""The Playground's form, generated from a version's OpenAPI schema: one `Field` per input, in
`x-order`, with the widget and the constraints the browser checks before the server does.

The constraints are the schema's own (`minimum`, `maxLength`, `pattern`, `enum`...), so the
browser refuses what `cogspec.inputs.validate_input` would answer with a 422, field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from modelyard.cogspec.inputs import resolve_schema

Widget = Literal[
    "text", "textarea", "number", "range", "select", "checkbox", "file", "files", "password",
    "list", "json",
]  # fmt: skip

#: Inputs by these names get a multi-line box, as on Replicate's pages.
LONG_TEXT_NAMES = ("prompt", "text", "message", "instruction", "context", "document")
LONG_TEXT_LENGTH = 200


@dataclass(frozen=True)
class Field:
    """One input of the form."""

    name: str
    label: str
    widget: Widget
    type: str  # the JSON type: string, integer, number, boolean, array
    item_type: str | None = None  # for arrays
    description: str = ""
    default: Any = None
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: str | None = None
    choices: list[Any] = field(default_factory=list)
    accept: str | None = None
    deprecated: bool = False

    @property
    def step(self) -> str:
        return "1" if self.type == "integer" or self.item_type == "integer" else "any"

    @property
    def default_text(self) -> str:
        """The default as the widget shows it (lists one item per line)."""
        if self.default is None:
            return ""
        if isinstance(self.default, list):
            return "\n".join(str(item) for item in self.default)
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return str(self.default)


def form_fields(schema: dict[str, Any], component: str = "Input") -> list[Field]:
    """The fields of `component` (`Input` or `TrainingInput`) in `x-order`."""
    schemas = schema.get("components", {}).get("schemas", {})
    spec = schemas.get(component) or {}
    required = set(spec.get("required", []))
    properties = spec.get("properties", {})
    ordered = sorted(properties.items(), key=lambda item: item[1].get("x-order", 0))
    return [_field(name, prop, schemas, name in required) for name, prop in ordered]


def _field(name: str, prop: dict[str, Any], schemas: dict[str, Any], required: bool) -> Field:
    flat = resolve_schema(prop, schemas)
    kind = flat.get("type", "string")
    items = resolve_schema(flat.get("items") or {}, schemas)
    common: dict[str, Any] = {
        "name": name,
        "label": prop.get("title") or name.replace("_", " ").capitalize(),
        "type": kind,
        "description": prop.get("description") or "",
        "default": flat.get("default"),
        "required": required,
        "minimum": _bound(flat.get("minimum")),
        "maximum": _bound(flat.get("maximum")),
        "min_length": flat.get("minLength"),
        "max_length": flat.get("maxLength"),
        "pattern": flat.get("pattern"),
        "choices": list(flat.get("enum") or []),
        "accept": flat.get("x-cog-accept") or items.get("x-cog-accept"),
        "deprecated": bool(flat.get("deprecated")),
    }
    if kind == "array":
        common["item_type"] = items.get("type", "string")
        nested = common["item_type"] in ("object", "array")
        widget: Widget = "files" if items.get("format") == "uri" else "json" if nested else "list"
    elif kind == "object" or "type" not in flat:  # a dict, or a union (anyOf): JSON
        widget = "json"
    else:
        widget = _scalar_widget(name, kind, flat)
    return Field(widget=widget, **common)


def _bound(value: float | None) -> float | None:
    """`1.0` as `1`: the schema writes integer bounds as floats; the page shows them as typed."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


MAX_SLIDER_SPAN = 100_000


def _scalar_widget(name: str, kind: str, flat: dict[str, Any]) -> Widget:
    if flat.get("enum"):
        return "select"
    if kind == "boolean":
        return "checkbox"
    if kind in ("integer", "number"):
        bounded = flat.get("minimum") is not None and flat.get("maximum") is not None
        # A slider over a huge span (a seed: 0 to 4294967295) cannot pick a value: a number box.
        narrow = bounded and flat["maximum"] - flat["minimum"] <= MAX_SLIDER_SPAN
        return "range" if narrow else "number"
    if flat.get("format") == "uri":
        return "file"
    if flat.get("format") == "password" or flat.get("x-cog-secret"):
        return "password"
    long = (flat.get("maxLength") or 0) > LONG_TEXT_LENGTH
    if long or any(word in name.lower() for word in LONG_TEXT_NAMES):
        return "textarea"
    return "text"
