"""The OpenAPI schema of a Cog predictor, built from its source without importing it.

The rules follow Cog 0.16's runtime (pydantic) generator, whose output is what most published
models carry: one ``Input`` property per ``predict``/``run`` parameter with ``x-order``, a title-cased
``title``, the constraints of ``Input(...)``, one enum component per ``choices`` field, and an ``Output``
component from the return annotation. Where Cog 0.16 and the newer Go generator disagree, the
choice is noted where it is made. Problems are :class:`CogSpecError` located at ``file:line``.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path
from typing import Any

from .annotations import canonical, resolve_type
from .config import CogConfig, PredictorRef
from .constraints import (
    add_constraints,
    check_default,
    check_input_type,
    choices_enum,
    typed_dicts_as_objects,
)
from .errors import CogSpecError
from .openapi import RESERVED_COMPONENTS, build_document
from .render import object_schema, type_schema
from .render import title as field_title
from .source import ModuleSource, read_module

INPUT_KEYWORDS = (
    "default",
    "description",
    "ge",
    "le",
    "min_length",
    "max_length",
    "regex",
    "choices",
    "deprecated",
    "accept",
)
_INPUT_CALLS = ("cog.Input",)
_STREAMING = ("cog.streaming",)
_CONSTRAINTS = ("ge", "le", "min_length", "max_length", "regex")


def predictor_schema(package_dir: Path, config: CogConfig) -> dict[str, Any]:
    """Cog's OpenAPI document for the package's predictor (and trainer, if ``train:`` is set)."""
    if config.predictor is None:
        raise CogSpecError("no 'run' or 'predict' key: the package has no predictor", "cog.yaml")
    components: dict[str, Any] = {}
    ref = config.predictor
    try:
        streaming = _add_components(package_dir, ref, ("predict", "run"), "", components)
        if config.trainer is not None:
            ref = config.trainer
            _add_components(package_dir, ref, ("train",), "Training", components)
    except RecursionError:
        # Each file's tree is bounded where it is parsed; what is left is a chain of constants
        # (X2 = X1 + 1, X1 = X0 + 1, ...) followed name by name.
        raise CogSpecError(
            "constants defined through too long a chain of other constants",
            _display(package_dir, ref.file),
        ) from None
    return build_document(components, streaming=streaming, training=config.trainer is not None)


def _add_components(
    package_dir: Path, ref: PredictorRef, methods: tuple[str, ...], prefix: str, out: dict[str, Any]
) -> bool:
    """Add ``<prefix>Input``, ``<prefix>Output`` and the enums to ``out``; return "is streaming"."""
    module = read_module(ref.file, _display(package_dir, ref.file), package_dir)
    func, is_method = _target(module, ref.name, methods)
    input_schema, enums = _input_component(func, module, is_method, f"{prefix}Input")
    out[f"{prefix}Input"] = input_schema
    out[f"{prefix}Output"] = _output_component(func, module, f"{prefix}Output")
    for name, enum in enums.items():
        component = _enum_component_name(name, enum, out)
        out[component] = enum
        input_schema["properties"][name]["allOf"] = [{"$ref": f"#/components/schemas/{component}"}]
    return any(
        canonical(module.qualname(_call_target(d))) in _STREAMING for d in func.decorator_list
    )


def _enum_component_name(name: str, enum: dict[str, Any], taken: dict[str, Any]) -> str:
    """The component holding a ``choices`` enum: the parameter's name, as in Cog, unless that is
    taken by a fixed component or by a different enum (``train()`` and ``predict()`` may both have
    a ``scheduler``); then ``name_2``, ``name_3``... (Cog 0.16 lets pydantic pick long names)."""
    candidate, n = name, 1
    while candidate in RESERVED_COMPONENTS or taken.get(candidate, enum) != enum:
        n += 1
        candidate = f"{name}_{n}"
    return candidate


def _display(package_dir: Path, file: Path) -> str:
    try:
        return file.relative_to(package_dir).as_posix()
    except ValueError:
        return file.name


def _call_target(node: ast.expr) -> ast.expr:
    return node.func if isinstance(node, ast.Call) else node


_Func = ast.FunctionDef | ast.AsyncFunctionDef


def _target(module: ModuleSource, name: str, methods: tuple[str, ...]) -> tuple[_Func, bool]:
    """The function whose signature is the interface: a method of the class, or the function."""
    if name in module.functions:
        return module.functions[name], False
    if name not in module.classes:
        raise module.error(f"no class or function named {name!r}")
    cls = module.classes[name]
    found = {m: f for m in methods if (f := _find_method(module, cls, m, set())) is not None}
    if len(found) > 1:
        raise module.error(
            f"{name} defines both {' and '.join(f'{m}()' for m in found)}; keep one", cls
        )
    if not found:
        wanted = " or ".join(f"{m}()" for m in methods)
        raise module.error(f"{name} has no {wanted} method", cls)
    method = next(iter(found.values()))
    # A @staticmethod has no self to skip.
    static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in method.decorator_list)
    return method, not static


def _find_method(
    module: ModuleSource, cls: ast.ClassDef, method: str, seen: set[str]
) -> _Func | None:
    for stmt in cls.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == method:
            return stmt
    seen.add(cls.name)
    for base in cls.bases:  # methods inherited from a base class defined in the same file
        if isinstance(base, ast.Name) and base.id in module.classes and base.id not in seen:
            found = _find_method(module, module.classes[base.id], method, seen)
            if found is not None:
                return found
    return None


def _parameters(func: _Func, skip_self: bool) -> list[tuple[ast.arg, ast.expr | None]]:
    args = func.args
    star = args.vararg or args.kwarg
    if star is not None:
        raise CogSpecError(
            f"{func.name}() cannot take *{'*' if args.kwarg else ''}{star.arg}: "
            "every input must be a named parameter",
            None,
        )  # located by caller
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
    params = list(zip(positional, [*defaults, *args.defaults]))
    params += list(zip(args.kwonlyargs, args.kw_defaults))
    return params[1:] if skip_self else params


def _input_component(
    func: _Func, module: ModuleSource, is_method: bool, component: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        params = _parameters(func, is_method)
    except CogSpecError as exc:
        raise module.error(exc.message, func) from None
    properties: dict[str, Any] = {}
    required: list[str] = []
    enums: dict[str, Any] = {}
    for order, (arg, default) in enumerate(params):
        prop, is_required, enum = _input_property(arg, default, order, module, func.name)
        properties[arg.arg] = prop
        if is_required:
            required.append(arg.arg)
        if enum is not None:
            enums[arg.arg] = enum
    schema: dict[str, Any] = {"properties": properties, "type": "object"}
    if required:
        schema["required"] = required
    schema["title"] = component
    return schema, enums


def _input_call(default: ast.expr, module: ModuleSource) -> tuple[ast.Call, ModuleSource] | None:
    """The ``Input(...)`` call behind a default, if there is one: written in place, held by a
    module constant, or returned by a helper function without arguments (Replicate's
    cog-comfyui writes ``output_format: str = optimise_images.predict_output_format()``)."""
    for _ in range(8):  # helpers calling helpers, but never forever
        if (
            isinstance(default, ast.Call)
            and canonical(module.qualname(default.func)) in _INPUT_CALLS
        ):
            return default, module
        if isinstance(default, ast.Name) and default.id in module.assignments:
            default = module.assignments[default.id]
            continue
        if isinstance(default, ast.Call) and not default.args and not default.keywords:
            found = module.function(default.func)
            body = [s for s in found[1].body if not _is_docstring(s)] if found else []
            if found and len(body) == 1 and isinstance(body[0], ast.Return) and body[0].value:
                module, default = found[0], body[0].value
                continue
        return None
    return None


def _is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)


def _input_options(default: ast.expr | None, module: ModuleSource) -> dict[str, Any]:
    """The keyword arguments of ``Input(...)`` (or ``{"default": v}`` for ``x: int = v``)."""
    if default is None:
        return {}
    found = _input_call(default, module)
    if found is None:
        return {"default": module.literal(default, "default")}
    default, module = found
    options: dict[str, Any] = {}
    if len(default.args) > 1:
        raise module.error("Input() takes at most one positional argument (the default)", default)
    if default.args:
        options["default"] = module.literal(default.args[0], "default")
    for keyword in default.keywords:
        if keyword.arg == "default_factory":
            raise module.error("Input(default_factory=...) is not supported; use default=", keyword)
        if keyword.arg not in INPUT_KEYWORDS:
            raise module.error(
                f"Input() got an unexpected keyword argument {keyword.arg!r}", keyword
            )
        options[keyword.arg] = module.literal(keyword.value, keyword.arg)
    if options.get("default", None) is Ellipsis:  # Input(...) / Input(default=...): required
        del options["default"]
    return options


def _input_property(
    arg: ast.arg, default: ast.expr | None, order: int, module: ModuleSource, method: str
) -> tuple[dict[str, Any], bool, dict[str, Any] | None]:
    name = arg.arg
    if arg.annotation is None:
        raise module.error(f"parameter {name!r} of {method}() has no type annotation", arg)
    ctype = typed_dicts_as_objects(resolve_type(arg.annotation, module))
    check_input_type(ctype, name, module, arg)
    options = _input_options(default, module)
    node = default if default is not None else arg
    value = options.get("default")
    choices = options.get("choices")
    enum = None
    if choices is not None:
        enum = choices_enum(ctype, name, choices, module, node)
        prop: dict[str, Any] = {}
    else:
        prop = type_schema(replace(ctype, nullable=False), "input")
        if "anyOf" in prop:
            # As Cog's generator (pkg/schema/types.go ValidateInputField): a union takes no
            # constraints; a nullable union marks each of its variants nullable too.
            if any(options.get(k) is not None for k in _CONSTRAINTS):
                raise module.error(
                    f"constraints are not supported on union inputs ({name!r})", node
                )
            if ctype.nullable:
                prop["anyOf"] = [{**v, "nullable": True} for v in prop["anyOf"]]
        else:  # pydantic puts constraints beside the type, before the title
            add_constraints(prop, options, ctype, module, node)
        prop["title"] = field_title(name)
    if options.get("description") is not None:
        prop["description"] = options["description"]
    # Cog 0.16 (pydantic) rule, which most published models rely on: a default of None makes
    # an input optional without showing a default; the Go generator (0.17+) instead makes
    # `x: int = Input(default=None)` required.
    if value is not None:
        check_default(value, options, ctype, module, node, name)
        prop["default"] = value
    elif ctype.kind == "secret" and "default" in options:
        # `api_key: Secret = Input(default=None)` is Cog's idiom for an optional credential: Cog's
        # generator (pkg/schema/openapi_spec.go buildInputSchema) makes it nullable with
        # `default: null`, unlike other types' None defaults.
        prop["default"] = None
        ctype = replace(ctype, nullable=True)
    if options.get("deprecated"):
        prop["deprecated"] = True
    if options.get("accept") is not None:
        if ctype.kind not in ("path", "file") and (
            ctype.item is None or ctype.item.kind not in ("path", "file")
        ):
            raise module.error(f"accept= only applies to Path or File inputs, not {name!r}", node)
        prop["x-cog-accept"] = options["accept"]
    prop["x-order"] = order
    if ctype.nullable:
        prop["nullable"] = True
    is_required = "default" not in options and not ctype.nullable
    return prop, is_required, enum


def _output_component(func: _Func, module: ModuleSource, component: str) -> dict[str, Any]:
    if func.returns is None:
        raise module.error(
            f"{func.name}() has no return type annotation (use -> Any if it varies)", func
        )
    ctype = resolve_type(func.returns, module)
    if ctype.nullable:
        raise module.error("Optional is not allowed as a return type", func.returns)
    if ctype.kind == "union":
        raise module.error(f"unsupported output type {ctype.describe()} (unions)", func.returns)
    if ctype.kind == "object":
        # Cog 0.16 references a model not named Output through a separate component; like the
        # Go generator we inline it, so that Output is always self-contained.
        schema = object_schema(ctype, "output")
    else:
        schema = type_schema(ctype, "output")
    schema["title"] = component
    return schema
