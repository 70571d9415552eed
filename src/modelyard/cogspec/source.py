"""Reading a predictor's Python source with ``ast``, without importing it.

Importing user code would run it (and need its dependencies, GPUs, weights...), so everything the
platform needs before a worker exists (does the reference point at something real, what is the input
schema) is read from the syntax tree instead. :class:`ModuleSource` is that reading: what the module
imports under which local names, which classes and functions it defines, and the values of its simple
module-level constants, so that ``Input(choices=SCHEDULERS)`` can be resolved the way Cog would.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CogSpecError

_MISSING = object()

# Binary operators allowed in constant expressions such as ``le=2**32 - 1`` or ``"a" + "b"``.
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}


@dataclass
class ModuleSource:
    """The statically known facts about one Python file.

    ``display`` is the path shown in errors (relative to the package, e.g. ``predict.py``).
    ``imports`` maps a local name to the dotted name it stands for (``P`` -> ``cog.Path`` for
    ``from cog import Path as P``; ``np`` -> ``numpy`` for ``import numpy as np``).
    """

    path: Path
    display: str
    tree: ast.Module
    imports: dict[str, str] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = field(default_factory=dict)
    # Module-level ``NAME = <expr>`` (the last assignment wins, as at import time).
    assignments: dict[str, ast.expr] = field(default_factory=dict)

    def error(self, message: str, node: ast.AST | None = None) -> CogSpecError:
        """A :class:`CogSpecError` located at ``node`` in this file."""
        return CogSpecError(message, self.display, getattr(node, "lineno", None))

    def qualname(self, node: ast.expr) -> str | None:
        """The dotted name an expression like ``Path``, ``cog.Path`` or ``t.List`` stands for.

        Imported names are expanded (``P`` -> ``cog.Path``); names defined in the file stay bare;
        anything that is not a (dotted) name gives ``None``.
        """
        parts: list[str] = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.imports.get(node.id, node.id))
        return ".".join(reversed(parts))

    def literal(self, node: ast.expr, what: str) -> Any:
        """Evaluate a constant expression (literals, negatives, lists, module constants...).

        ``what`` names the value in the error raised when it cannot be evaluated statically.
        """
        value = self._eval(node, set())
        if value is _MISSING:
            imported = [
                n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in self.imports
            ]
            hint = (
                f"{imported[0]!r} is imported from {self.imports[imported[0]].rsplit('.', 1)[0]!r}; "
                "define it in this file"
                if imported
                else "use a literal or a module-level constant"
            )
            raise self.error(
                f"cannot resolve {what} {ast.unparse(node)!r} statically ({hint})", node
            )
        return value

    def _eval(self, node: ast.expr, seen: set[str]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = self._eval(node.operand, seen)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return -value if isinstance(node.op, ast.USub) else value
            return _MISSING
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self._eval(node.left, seen), self._eval(node.right, seen)
            if left is _MISSING or right is _MISSING:
                return _MISSING
            try:
                return _BINOPS[type(node.op)](left, right)
            except (TypeError, ValueError, ArithmeticError):  # "a" - 1, 1 / 0: not constants
                return _MISSING
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [self._eval(item, seen) for item in node.elts]
            return _MISSING if any(item is _MISSING for item in items) else items
        if isinstance(node, ast.Dict):
            keys = [self._eval(k, seen) if k is not None else _MISSING for k in node.keys]
            values = [self._eval(v, seen) for v in node.values]
            if any(x is _MISSING for x in keys + values):
                return _MISSING
            return dict(zip(keys, values))
        if isinstance(node, ast.Name):
            return self._eval_name(node.id, seen)
        if isinstance(node, ast.Call):
            return self._eval_call(node, seen)
        if isinstance(node, ast.JoinedStr):  # f"Choose from {', '.join(NAMES)}"
            return self._eval_fstring(node, seen)
        return _MISSING

    def _eval_fstring(self, node: ast.JoinedStr, seen: set[str]) -> Any:
        parts = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                parts.append(str(part.value))
                continue
            if not isinstance(part, ast.FormattedValue):
                return _MISSING
            value = self._eval(part.value, seen)
            spec = self._eval(part.format_spec, seen) if part.format_spec else ""
            if value is _MISSING or spec is _MISSING:
                return _MISSING
            convert = {ord("r"): repr, ord("s"): str, ord("a"): ascii}.get(part.conversion)
            try:
                parts.append(format(convert(value) if convert else value, spec))
            except (TypeError, ValueError):
                return _MISSING
        return "".join(parts)

    def _eval_name(self, name: str, seen: set[str]) -> Any:
        if name in seen or name not in self.assignments:
            return _MISSING
        return self._eval(self.assignments[name], seen | {name})

    def _eval_call(self, node: ast.Call, seen: set[str]) -> Any:
        # Real models write ``choices=list(SCHEDULERS.keys())`` where SCHEDULERS maps names to
        # classes: only the keys matter, so ``list``/``sorted`` of a dict's keys is supported even
        # when its values are not constants.
        func = node.func
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "join"
            and isinstance(func.value, ast.Constant)
            and isinstance(func.value.value, str)
            and len(node.args) == 1
        ):  # ", ".join(NAMES)
            items = self._eval_call(ast.Call(ast.Name("list"), node.args, []), seen)
            if items is _MISSING or not all(isinstance(i, str) for i in items):
                return _MISSING
            return func.value.value.join(items)
        if not (isinstance(func, ast.Name) and func.id in ("list", "sorted", "tuple")):
            return _MISSING
        if len(node.args) != 1 or node.keywords:
            return _MISSING
        arg = node.args[0]
        if (
            isinstance(arg, ast.Call)
            and isinstance(arg.func, ast.Attribute)
            and arg.func.attr == "keys"
            and not arg.args
        ):
            arg = arg.func.value
        keys = self._keys_of(arg, seen)
        if keys is _MISSING:
            return _MISSING
        return sorted(keys) if func.id == "sorted" else list(keys)

    def _keys_of(self, node: ast.expr, seen: set[str]) -> Any:
        if isinstance(node, ast.Name) and node.id in self.assignments and node.id not in seen:
            return self._keys_of(self.assignments[node.id], seen | {node.id})
        if isinstance(node, ast.Dict):
            keys = [self._eval(k, seen) if k is not None else _MISSING for k in node.keys]
            return _MISSING if any(k is _MISSING for k in keys) else keys
        value = self._eval(node, seen)
        return value if isinstance(value, list) else _MISSING


def read_module(path: Path, display: str) -> ModuleSource:
    """Parse ``path`` and index its top level; a syntax error becomes ``display:line: ...``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CogSpecError("file not found", display) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CogSpecError(f"cannot read file: {exc}", display) from None
    try:
        tree = ast.parse(text, filename=display)
    except SyntaxError as exc:
        raise CogSpecError(exc.msg or "invalid syntax", display, exc.lineno) from None
    module = ModuleSource(path=path, display=display, tree=tree)
    for stmt in tree.body:
        _index(module, stmt)
    return module


def _index(module: ModuleSource, stmt: ast.stmt, nested: bool = False) -> None:
    # In nested blocks (try/except ImportError fallbacks) the first import of a name wins.
    bind = module.imports.setdefault if nested else module.imports.__setitem__
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            if alias.asname:
                bind(alias.asname, alias.name)
            else:
                # ``import collections.abc`` binds ``collections``, and ``collections.abc.X``
                # then qualifies to itself.
                head = alias.name.split(".")[0]
                bind(head, head)
    elif isinstance(stmt, ast.ImportFrom):
        base = "." * stmt.level + (stmt.module or "")
        for alias in stmt.names:
            if alias.name != "*":
                bind(alias.asname or alias.name, f"{base}.{alias.name}")
    elif isinstance(stmt, ast.ClassDef):
        module.classes[stmt.name] = stmt
        module.imports.pop(stmt.name, None)
    elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        module.functions[stmt.name] = stmt
        module.imports.pop(stmt.name, None)
    elif isinstance(stmt, ast.Assign):
        for target in stmt.targets:
            if isinstance(target, ast.Name):
                module.assignments[target.id] = stmt.value
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        if isinstance(stmt.target, ast.Name):
            module.assignments[stmt.target.id] = stmt.value
    elif isinstance(stmt, (ast.If, ast.Try)):
        # ``try: from x import y / except ImportError: ...`` and ``if TYPE_CHECKING:`` blocks
        # still bind names at module level.
        for inner in _nested_statements(stmt):
            _index(module, inner, nested=True)


def _nested_statements(stmt: ast.If | ast.Try) -> list[ast.stmt]:
    if isinstance(stmt, ast.If):
        return [*stmt.body, *stmt.orelse]
    handlers = [s for h in stmt.handlers for s in h.body]
    return [*stmt.body, *handlers, *stmt.orelse, *stmt.finalbody]
