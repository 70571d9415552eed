"""Reading a predictor's Python source with ``ast``, without importing it.

Importing user code would run it (and need its dependencies, GPUs, weights...), so everything the
platform needs before a worker exists (does the reference point at something real, what is the input
schema) is read from the syntax tree instead. :class:`ModuleSource` is that reading: what the module
imports under which local names, which classes and functions it defines, and the values of its simple
module-level constants, so that ``Input(choices=SCHEDULERS)`` can be resolved the way Cog would.

The source is a pushed file, so it is read as hostile input: at most ``MAX_TEXT_BYTES``, and a tree
nested more than :data:`MAX_AST_DEPTH` levels (``1+1+...`` 200,000 times, a thousand nested lists)
is refused where it is parsed, since everything that walks the tree here recurses once per level.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from .errors import CogSpecError
from .packagefiles import read_text

_MISSING = object()
# Real code stays under 90 levels (CPython's own library under 50); the readers here recurse up
# to three frames a level, which keeps them far from Python's recursion limit of 1000.
MAX_AST_DEPTH = 200

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
    # The package's folder, to find the package's other files; and the files already read from
    # it (shared by every module of one reading, so each file is parsed once).
    package_dir: Path | None = None
    siblings: dict[Path, ModuleSource] = field(default_factory=dict, repr=False)

    def function(self, node: ast.expr) -> tuple[ModuleSource, ast.FunctionDef] | None:
        """The function ``node`` names, defined in this file or in another file of the package
        (``from helpers import make_input``, ``from .helpers import inputs`` + ``inputs.f``)."""
        if isinstance(node, ast.Name) and node.id in self.functions:
            found = self.functions[node.id]
            return (self, found) if isinstance(found, ast.FunctionDef) else None
        name = self.qualname(node)
        if name is None or "." not in name.lstrip("."):
            return None
        module_name, _, function = name.rpartition(".")
        other = self.import_module(module_name)
        imported = other.functions.get(function) if other is not None else None
        if other is not None and isinstance(imported, ast.FunctionDef):
            return (other, imported)
        return None

    def import_module(self, dotted: str) -> ModuleSource | None:
        """Another Python file of the package by module name (absolute, or relative to this
        file), or None when it is not a file of the package (e.g. an installed library)."""
        if self.package_dir is None:
            return None
        root = self.package_dir.resolve()
        parts = dotted.lstrip(".").split(".") if dotted.strip(".") else []
        level = len(dotted) - len(dotted.lstrip("."))
        base = self.path.resolve().parent if level else root
        for _ in range(max(level - 1, 0)):
            base = base.parent
        candidates = [base.joinpath(*parts) / "__init__.py"]
        if parts:
            candidates.insert(0, base.joinpath(*parts[:-1], parts[-1] + ".py"))
        for candidate in candidates:
            if candidate.is_file() and candidate.is_relative_to(root):
                if candidate not in self.siblings:
                    display = candidate.relative_to(root).as_posix()
                    self.siblings[candidate] = read_module(
                        candidate, display, self.package_dir, self.siblings
                    )
                return self.siblings[candidate]
        return None

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
            if imported:
                name, target = imported[0], self.imports[imported[0]]
                origin = target.rpartition(".")[0] or ("." if target.startswith(".") else "")
                source = f"comes from {origin!r}" if origin else "is an imported module"
                hint = f"{name!r} {source}; use a constant defined in the package"
            else:
                hint = "use a literal or a module-level constant"
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
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            # ``constants.SIZES`` after ``from . import constants`` / ``import constants``
            name = self.qualname(node)
            return self._eval_imported(name) if name and node.value.id in self.imports else _MISSING
        if isinstance(node, ast.Call):
            return self._eval_call(node, seen)
        if isinstance(node, ast.Subscript):  # SIZES[0], DEFAULTS["steps"]
            container, key = self._eval(node.value, seen), self._eval(node.slice, seen)
            try:
                return _MISSING if container is _MISSING or key is _MISSING else container[key]
            except (TypeError, KeyError, IndexError):
                return _MISSING
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
            conversions: dict[int, Callable[[object], str]] = {
                ord("r"): repr,
                ord("s"): str,
                ord("a"): ascii,
            }
            convert = conversions.get(part.conversion)
            try:
                parts.append(format(convert(value) if convert else value, spec))
            except (TypeError, ValueError):
                return _MISSING
        return "".join(parts)

    def _eval_name(self, name: str, seen: set[str]) -> Any:
        if name in seen:
            return _MISSING
        if name in self.assignments:
            return self._eval(self.assignments[name], seen | {name})
        if name in self.imports:  # a constant imported from another file of the package
            return self._eval_imported(self.imports[name])
        return _MISSING

    def _eval_imported(self, qualname: str) -> Any:
        module_name, _, constant = qualname.rpartition(".")
        other = self.import_module(module_name) if module_name.strip(".") else None
        if other is None or other is self or constant not in other.assignments:
            return _MISSING
        return other._eval(other.assignments[constant], {constant})

    def _eval_call(self, node: ast.Call, seen: set[str]) -> Any:
        # Real models write ``choices=list(SCHEDULERS.keys())`` (or ``SCHEDULERS.keys()``, or
        # ``", ".join(SCHEDULERS)`` in a description) where SCHEDULERS maps names to classes: only
        # the keys matter, so they are resolved even when the dict's values are not constants.
        func = node.func
        if node.keywords:
            return _MISSING
        if isinstance(func, ast.Attribute) and func.attr == "keys" and not node.args:
            return self._iterate(func.value, seen)
        if len(node.args) != 1:
            return _MISSING
        items = self._iterate(node.args[0], seen)
        if items is _MISSING:
            return _MISSING
        if isinstance(func, ast.Name) and func.id in ("list", "tuple"):
            return items
        if isinstance(func, ast.Name) and func.id == "sorted":
            try:
                return sorted(items)
            except TypeError:
                return _MISSING
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "join"
            and isinstance(func.value, ast.Constant)
            and isinstance(func.value.value, str)
            and all(isinstance(i, str) for i in items)
        ):
            return func.value.value.join(items)
        return _MISSING

    def _iterate(self, node: ast.expr, seen: set[str]) -> Any:
        """The items of iterating ``node``: a dict's keys (values may be unknown), or a list."""
        if isinstance(node, ast.Name) and node.id in self.assignments and node.id not in seen:
            return self._iterate(self.assignments[node.id], seen | {node.id})
        if isinstance(node, ast.Dict):
            keys = [self._eval(k, seen) if k is not None else _MISSING for k in node.keys]
            return _MISSING if any(k is _MISSING for k in keys) else keys
        value = self._eval(node, seen)
        if isinstance(value, (dict, str)):
            return list(value)
        return value if isinstance(value, list) else _MISSING


def read_module(
    path: Path,
    display: str,
    package_dir: Path | None = None,
    siblings: dict[Path, ModuleSource] | None = None,
) -> ModuleSource:
    """Parse ``path`` and index its top level; a syntax error becomes ``display:line: ...``.

    With ``package_dir``, names imported from the package's other files can be followed.
    """
    tree = cast(ast.Module, parse(read_text(path, display), display))
    module = ModuleSource(path=path, display=display, tree=tree, package_dir=package_dir)
    if siblings is not None:
        module.siblings = siblings
    for stmt in tree.body:
        _index(module, stmt)
    return module


def parse(text: str, display: str, mode: str = "exec", line: int | None = None) -> ast.AST:
    """``ast.parse`` for source someone else wrote: a syntax error, a tree too deep to build
    (RecursionError, MemoryError) or to walk (deeper than MAX_AST_DEPTH) is a CogSpecError.
    ``line`` locates errors in a fragment (a string annotation) at the line holding it."""
    try:
        tree = ast.parse(text, filename=display, mode=mode)
    except SyntaxError as exc:
        raise CogSpecError(exc.msg or "invalid syntax", display, line or exc.lineno) from None
    except ValueError as exc:  # a NUL byte
        raise CogSpecError(f"invalid source: {exc}", display, line) from None
    except (RecursionError, MemoryError):
        raise CogSpecError(_TOO_DEEP, display, line) from None
    deepest = _deeper_than(tree, MAX_AST_DEPTH)
    if deepest is not None:
        raise CogSpecError(_TOO_DEEP, display, line or getattr(deepest, "lineno", None))
    return tree


_TOO_DEEP = f"an expression or block is nested more than {MAX_AST_DEPTH} levels deep"


def _deeper_than(tree: ast.AST, limit: int) -> ast.AST | None:
    """The first node found more than ``limit`` levels down, or None (walked without recursion)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return node
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return None


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
        # ``from . import x`` -> ".x"; ``from .m import x`` -> ".m.x"; ``from m import x`` -> "m.x"
        base = "." * stmt.level + (f"{stmt.module}." if stmt.module else "")
        for alias in stmt.names:
            if alias.name != "*":
                bind(alias.asname or alias.name, base + alias.name)
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
