"""Python type annotations of a predictor, read from the syntax tree.

``resolve_type`` turns an annotation node (``Optional[cog.Path]``, ``list[str]``, ``Iterator[str]``,
``Output`` for a ``BaseModel`` or ``TypedDict`` defined in the same file or in another file of the
package...) into a :class:`CogType`, resolving names through the file's imports so that
``from cog import Path``, ``import cog`` + ``cog.Path`` and aliases all mean the same thing.
``render.py`` turns a :class:`CogType` into its JSON schema; which types are allowed as inputs is
decided by ``constraints.py``, as outputs by ``schema.py``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field, replace
from typing import Any, cast

from .errors import CogSpecError
from .source import ModuleSource, parse

SCALARS = ("str", "int", "float", "bool")
# Kinds that are JSON-native, so they may appear in an input union (cog.md §1 Types).
JSON_NATIVE = (*SCALARS, "dict", "list", "any")

_NAMES: dict[str, str] = {
    "str": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "dict": "dict",
    "list": "list",
    "cog.Path": "path",
    "cog.File": "file",
    "cog.Secret": "secret",
    "pathlib.Path": "path",
    "typing.Any": "any",
    "typing.Dict": "dict",
    "typing.List": "list",
    "cog.ConcatenateIterator": "concat",
    "cog.AsyncConcatenateIterator": "concat",
    "typing.Iterator": "iterator",
    "typing.AsyncIterator": "iterator",
    "collections.abc.Iterator": "iterator",
    "collections.abc.AsyncIterator": "iterator",
    "typing.Optional": "optional",
    "typing.Union": "union",
    "typing.Annotated": "annotated",
    "None": "none",
}
_MODEL_BASES = ("cog.BaseModel", "pydantic.BaseModel", "pydantic.main.BaseModel")
_TYPED_DICT_BASES = ("typing.TypedDict",)
_DATACLASS_DECORATORS = ("dataclasses.dataclass",)
_FIELD_CALLS = ("pydantic.Field", "pydantic.fields.Field", "dataclasses.field")
NO_DEFAULT: Any = object()  # an object field without a default


def canonical(qualname: str | None) -> str | None:
    """Normalise equivalent spellings: ``typing_extensions.X`` -> ``typing.X``, ``cog.types.Path``
    -> ``cog.Path``."""
    if qualname is None:
        return None
    for prefix, new in (
        ("typing_extensions.", "typing."),
        ("cog.types.", "cog."),
        ("cog.base_model.", "cog."),
        ("cog.input.", "cog."),
    ):
        if qualname.startswith(prefix):
            return new + qualname[len(prefix) :]
    return qualname


@dataclass(frozen=True)
class ObjectField:
    """A field of a BaseModel / dataclass / TypedDict output type."""

    name: str
    type: CogType
    default: Any = NO_DEFAULT
    required: bool = True


@dataclass(frozen=True)
class CogType:
    """A resolved type. ``kind`` is one of: str int float bool path file secret any dict list
    iterator concat object union. ``item`` is the element of list/iterator/concat (``None`` for a
    bare ``list``) or the value type of ``dict[str, V]``."""

    kind: str
    item: CogType | None = None
    nullable: bool = False
    variants: tuple[CogType, ...] = ()
    fields: tuple[ObjectField, ...] = field(default=(), compare=False)
    name: str | None = None
    #: For an object: "model", "dataclass" or "typeddict" (a TypedDict input is an opaque object).
    style: str | None = field(default=None, compare=False)

    def describe(self) -> str:
        """A short human name for error messages (``list[Path]``)."""
        names = {
            "path": "Path",
            "file": "File",
            "secret": "Secret",
            "any": "Any",
            "concat": "ConcatenateIterator",
            "iterator": "Iterator",
        }
        base = self.name or names.get(self.kind, self.kind)
        if self.kind == "union":
            base = " | ".join(v.describe() for v in self.variants)
        elif self.item is not None:
            base = f"{base}[{self.item.describe()}]"
        return f"Optional[{base}]" if self.nullable else base


def resolve_type(
    node: ast.expr, module: ModuleSource, _seen: frozenset[str] = frozenset()
) -> CogType:
    """Resolve an annotation node; an unknown or unsupported type is a located CogSpecError."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        # A string annotation ("Path" or "list[Output]"): parse it where it stands.
        try:
            parsed = parse(node.value, module.display, "eval", getattr(node, "lineno", None))
        except CogSpecError:  # a syntax error, or nested too deep
            raise module.error(f"invalid type annotation {node.value!r}", node) from None
        inner = cast(ast.Expression, parsed).body
        return resolve_type(ast.copy_location(inner, node), module, _seen)
    if isinstance(node, ast.Constant) and node.value is None:
        return CogType("none")
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _union([node.left, node.right], module, _seen, node)
    if isinstance(node, ast.Subscript):
        return _generic(node, module, _seen)
    name = module.qualname(node)
    if name is None:
        raise module.error(f"unsupported type annotation {ast.unparse(node)!r}", node)
    if isinstance(node, ast.Name) and node.id in module.classes:
        return _object(module.classes[node.id], module, _seen)
    kind = _NAMES.get(canonical(name) or "")
    if kind is None:
        # A model defined in another file of the package (``from .types import Output``), read
        # statically as Cog's generator does (pkg/schema/python/models.go resolveExternalModels).
        found = imported_class(name, module)
        if found is not None:
            return _object(found[0], found[1], _seen)
    if kind is None or kind in ("optional", "union", "annotated"):
        raise _unknown(node, name, module)
    if kind == "concat":  # a bare ConcatenateIterator yields str
        return CogType("concat", item=CogType("str"))
    return CogType(kind)


def _unknown(node: ast.expr, name: str, module: ModuleSource) -> Exception:
    text = ast.unparse(node)
    if name != text:  # it came from an import
        origin = name.rsplit(".", 1)[0]
        return module.error(
            f"cannot resolve type {text!r} (imported from {origin!r}): types are read "
            "statically, so define it in a file of the package as a BaseModel subclass, or "
            f"mark a JSON-shaped type opaque: Annotated[{text}, cog.Opaque]",
            node,
        )
    return module.error(
        f"unknown type {text!r} (supported: str, int, float, bool, cog.Path, cog.File, "
        "cog.Secret, list[...], dict, Any, Optional[...], or a BaseModel defined in the package)",
        node,
    )


def imported_class(name: str, module: ModuleSource) -> tuple[ast.ClassDef, ModuleSource] | None:
    """The class that ``name`` (a dotted name from ``module``'s imports: ``types.Output``,
    ``.types.Output``) stands for in another file of the package, followed through re-exports;
    None when it is not a class of the package (an installed library, say)."""
    for _ in range(8):  # re-exports of re-exports, but never forever
        module_name, _, class_name = name.rpartition(".")
        if not module_name.strip("."):
            return None
        other = module.import_module(module_name)
        if other is None:
            return None
        if class_name in other.classes:
            return other.classes[class_name], other
        if class_name not in other.imports:
            return None
        name, module = other.imports[class_name], other
    return None


def _class_of(node: ast.expr, module: ModuleSource) -> tuple[ast.ClassDef, ModuleSource] | None:
    """The class a base-class expression names: defined in ``module`` or imported from the
    package."""
    if isinstance(node, ast.Name) and node.id in module.classes:
        return module.classes[node.id], module
    name = module.qualname(node)
    if name is None or name == getattr(node, "id", None):
        return None
    return imported_class(name, module)


def _opaque(node: ast.expr, module: ModuleSource) -> CogType:
    """The type inside ``Annotated[T, cog.Opaque]``: an opaque JSON value, whose inner type is
    never resolved (it is usually a third-party class), except that a list stays a list of opaque
    values and ``Optional[T]``/``T | None`` stays nullable (Cog's ``opaqueFieldType``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            parsed = parse(node.value, module.display, "eval", getattr(node, "lineno", None))
        except CogSpecError:
            return CogType("any")
        node = cast(ast.Expression, parsed).body
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        parts = [node.left, node.right]
        if any(isinstance(p, ast.Constant) and p.value is None for p in parts):
            inner = next(p for p in parts if not (isinstance(p, ast.Constant) and p.value is None))
            return replace(_opaque(inner, module), nullable=True)
        return CogType("any")
    head = canonical(module.qualname(_subscript_head(node)))
    kind = _NAMES.get(head or "")
    if kind == "list":
        return CogType("list", item=CogType("any"))
    if isinstance(node, ast.Subscript):
        args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
        if kind == "annotated":
            return _opaque(args[0], module)
        nones = [a for a in args if isinstance(a, ast.Constant) and a.value is None]
        if kind == "optional" and len(args) == 1:
            return replace(_opaque(args[0], module), nullable=True)
        if kind == "union" and len(args) == 2 and len(nones) == 1:
            inner = next(a for a in args if a not in nones)
            return replace(_opaque(inner, module), nullable=True)
    return CogType("any")


def _generic(node: ast.Subscript, module: ModuleSource, seen: frozenset[str]) -> CogType:
    outer = canonical(module.qualname(node.value))
    kind = _NAMES.get(outer or "")
    args = list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]
    if kind == "optional" and len(args) == 1:
        return _union([args[0], ast.Constant(None)], module, seen, node)
    if kind == "union":
        return _union(args, module, seen, node)
    if kind == "annotated":
        # Annotated[T, cog.Opaque] is an opaque JSON value; other metadata is ignored.
        if any(canonical(module.qualname(a)) == "cog.Opaque" for a in args[1:]):
            return _opaque(args[0], module)
        return resolve_type(args[0], module, seen)
    if kind in ("list", "iterator", "concat") and len(args) == 1:
        item = resolve_type(args[0], module, seen)
        if kind == "concat" and item.kind != "str":
            raise module.error(f"ConcatenateIterator must yield str, not {item.describe()}", node)
        return CogType(kind, item=item)
    if kind == "dict" and len(args) == 2:
        return CogType("dict", item=resolve_type(args[1], module, seen))
    raise module.error(f"unsupported type annotation {ast.unparse(node)!r}", node)


def _union(
    args: list[ast.expr], module: ModuleSource, seen: frozenset[str], node: ast.expr
) -> CogType:
    variants: list[CogType] = []
    nullable = False
    for arg in args:
        t = resolve_type(arg, module, seen)
        if t.kind == "none":
            nullable = True
        elif t.kind == "union":  # A | B | C parses as (A | B) | C
            variants.extend(t.variants)
            nullable = nullable or t.nullable
        else:
            variants.append(t)
    if not variants:
        raise module.error(f"unsupported type annotation {ast.unparse(node)!r}", node)
    if len(variants) == 1:
        return replace(variants[0], nullable=True) if nullable else variants[0]
    return CogType("union", variants=tuple(variants), nullable=nullable)


def _object(cls: ast.ClassDef, module: ModuleSource, seen: frozenset[str]) -> CogType:
    key = f"{module.display}:{cls.name}"  # two files of a package may both define an Output
    if key in seen:
        raise module.error(f"recursive type {cls.name!r} is not supported", cls)
    style = model_style(cls, module)
    if style is None:
        raise module.error(
            f"class {cls.name!r} is not a BaseModel, dataclass or TypedDict, so it cannot be "
            "used as a type",
            cls,
        )
    seen = seen | {key}
    total = not any(
        k.arg == "total" and isinstance(k.value, ast.Constant) and k.value.value is False
        for k in cls.keywords
    )
    fields: dict[str, ObjectField] = {}
    for base in cls.bases:  # fields inherited from models defined in the package come first
        found = _class_of(base, module)
        if found is not None and found[0] is not cls:
            parent = _object(found[0], found[1], seen)
            fields.update({f.name: f for f in parent.fields})
    for stmt in cls.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        if canonical(module.qualname(_subscript_head(stmt.annotation))) == "typing.ClassVar":
            continue
        annotation, not_required = _unwrap_not_required(stmt.annotation, module)
        ftype = resolve_type(annotation, module, seen)
        default = _field_default(stmt.value, module)
        required = total and not not_required and default is NO_DEFAULT and not ftype.nullable
        fields[stmt.target.id] = ObjectField(stmt.target.id, ftype, default, required)
    return CogType("object", fields=tuple(fields.values()), name=cls.name, style=style)


def model_style(cls: ast.ClassDef, module: ModuleSource, _depth: int = 0) -> str | None:
    """``"model"``, ``"dataclass"``, ``"typeddict"`` or None for a class defined in ``module``."""
    for deco in cls.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if canonical(module.qualname(target)) in _DATACLASS_DECORATORS:
            return "dataclass"
    for base in cls.bases:
        name = canonical(module.qualname(base))
        if name in _MODEL_BASES:
            return "model"
        if name in _TYPED_DICT_BASES:
            return "typeddict"
        found = _class_of(base, module) if _depth < 16 else None
        if found is not None and found[0] is not cls:
            inherited = model_style(found[0], found[1], _depth + 1)
            if inherited:
                return inherited
    return None


def _subscript_head(node: ast.expr) -> ast.expr:
    return node.value if isinstance(node, ast.Subscript) else node


def _unwrap_not_required(node: ast.expr, module: ModuleSource) -> tuple[ast.expr, bool]:
    if isinstance(node, ast.Subscript):
        head = canonical(module.qualname(node.value))
        if head == "typing.NotRequired":
            return node.slice, True
        if head == "typing.Required":
            return node.slice, False
    return node, False


def _field_default(node: ast.expr | None, module: ModuleSource) -> Any:
    if node is None:
        return NO_DEFAULT
    if isinstance(node, ast.Call) and canonical(module.qualname(node.func)) in _FIELD_CALLS:
        given = (
            node.args[0]
            if node.args
            else next((k.value for k in node.keywords if k.arg == "default"), None)
        )
        if given is None:
            # Field(default_factory=...) has a default we cannot know; Field() has none.
            factory = any(k.arg == "default_factory" for k in node.keywords)
            return None if factory else NO_DEFAULT
        node = given
    if isinstance(node, ast.Constant) and node.value is Ellipsis:
        return NO_DEFAULT
    try:
        return module.literal(node, "default")
    except CogSpecError:
        # A default the schema cannot show (e.g. a function call) still makes the field optional.
        return None
