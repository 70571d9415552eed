"""Walking a composed YAML node tree, so that every ``cog.yaml`` error can name its line.

``yaml.compose`` keeps each node's position; these helpers read values from nodes and raise
:class:`CogSpecError` located at ``cog.yaml:<line>`` when a value has the wrong shape.

The file comes from whoever pushes a package, so the loader refuses, while it composes and before
any value is built, what lets a few hundred bytes of YAML become gigabytes or a crash: anchors
and aliases (``&a`` / ``*a``: ten lines of them make 10^10 items), keys that are not scalars
(a list as a key is built to be compared, aliases or not), nesting deeper than :data:`MAX_DEPTH`
(the composer recurses once per level), and files over :data:`MAX_CONFIG_BYTES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from .errors import CogSpecError

CONFIG_FILE = "cog.yaml"
STR_TAG = "tag:yaml.org,2002:str"
NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
Entry = tuple[yaml.Node, yaml.Node]  # (key node, value node)
# A real cog.yaml is a few kB and four levels deep (build.run[].mounts[].id).
MAX_CONFIG_BYTES = 256 * 1024
MAX_DEPTH = 32


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing aliases, anchors, non-scalar keys and deep nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise CogSpecError(
                "YAML anchors and aliases (&name, *name) are not allowed in cog.yaml: "
                "write the value out",
                CONFIG_FILE,
                line,
            )
        # compose_mapping_node composes each key with index None and its value with the key.
        is_key = isinstance(parent, yaml.MappingNode) and index is None
        if is_key and not isinstance(event, yaml.ScalarEvent):
            raise CogSpecError(
                "a mapping key must be a plain value, not a list or a mapping", CONFIG_FILE, line
            )
        if self._depth >= MAX_DEPTH:
            raise CogSpecError(f"nested more than {MAX_DEPTH} levels deep", CONFIG_FILE, line)
        self._depth += 1
        try:
            node: yaml.Node = super().compose_node(parent, index)  # type: ignore[no-untyped-call]
        finally:
            self._depth -= 1
        return node


def compose(text: str) -> yaml.Node | None:
    """The node tree of a YAML document (None when empty); a parse error names its line."""
    if len(text) > MAX_CONFIG_BYTES:
        raise CogSpecError(f"the file is larger than {MAX_CONFIG_BYTES // 1024} KiB", CONFIG_FILE)
    loader = _Loader(text)
    try:
        return loader.get_single_node()  # type: ignore[no-untyped-call]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "parse error"
        raise CogSpecError(
            f"invalid YAML: {problem}", CONFIG_FILE, mark.line + 1 if mark else None
        ) from None
    except yaml.YAMLError as exc:
        raise CogSpecError(f"invalid YAML: {exc}", CONFIG_FILE) from None
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def node_error(node: yaml.Node, message: str) -> CogSpecError:
    """A CogSpecError at the line where ``node`` starts."""
    return CogSpecError(message, CONFIG_FILE, node.start_mark.line + 1)


def construct(node: yaml.Node) -> Any:
    """The Python value of a node; a value YAML cannot build (``!!int x``, a ``!!python/...``
    tag) is a CogSpecError at the node's line."""
    try:
        # A fresh constructor per call: SafeConstructor keeps per-document state.
        return yaml.constructor.SafeConstructor().construct_document(node)
    except yaml.MarkedYAMLError as exc:  # located at the inner node that failed
        problem = exc.problem or exc.context or "cannot be read"
        mark = exc.problem_mark or node.start_mark
        raise CogSpecError(f"invalid value: {problem}", CONFIG_FILE, mark.line + 1) from None
    except (yaml.YAMLError, ValueError, TypeError, LookupError, ArithmeticError) as exc:
        if isinstance(node, yaml.ScalarNode):  # `!!int x`, `!!bool maybe`
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            raise node_error(node, f"invalid value: {node.value!r} is not a valid {tag}") from None
        raise node_error(node, f"invalid value: {exc}") from None


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def mapping(
    node: yaml.Node,
    where: str,
    allowed: Sequence[str],
    top_level: bool = False,
    ignored: list[str] | None = None,
    removed: Sequence[str] = (),
) -> dict[str, Entry]:
    """The entries of a mapping node, rejecting unknown and duplicate keys.

    Keys whose dotted label is in ``removed`` are skipped and appended to ``ignored``.
    """
    if not isinstance(node, yaml.MappingNode):
        if top_level:
            raise node_error(node, "expected a mapping of keys (build, run, ...) at the top level")
        raise node_error(node, f"'{where}' must be a mapping")
    entries: dict[str, Entry] = {}
    for key_node, value_node in node.value:
        key = construct(key_node)
        label = key if top_level else f"{where}.{key}"
        if ignored is not None and label in removed:
            ignored.append(label)
            continue
        if key not in allowed:
            raise node_error(key_node, f"unknown key {label!r} (allowed: {', '.join(allowed)})")
        if key in entries:
            raise node_error(key_node, f"duplicate key {label!r}")
        entries[key] = (key_node, value_node)
    return entries


def optional_str(entry: Entry, label: str) -> str | None:
    node = entry[1]
    if is_null(node):
        return None
    if not (isinstance(node, yaml.ScalarNode) and node.tag == STR_TAG):
        raise node_error(node, f"'{label}' must be a string")
    return node.value


def boolean(entry: Entry, label: str) -> bool:
    node = entry[1]
    value = None if is_null(node) else construct(node)
    if not isinstance(value, bool):
        raise node_error(node, f"'{label}' must be true or false")
    return value


def integer(entry: Entry, label: str) -> int:
    node = entry[1]
    value = construct(node)
    if not isinstance(value, int) or isinstance(value, bool):
        raise node_error(node, f"'{label}' must be an integer")
    return value


def str_list(node: yaml.Node, label: str) -> tuple[str, ...]:
    if is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise node_error(node, f"'{label}' must be a list of strings")
    items = []
    for item in node.value:
        if not (isinstance(item, yaml.ScalarNode) and item.tag in (STR_TAG, *NUMBER_TAGS)):
            raise node_error(item, f"'{label}' must be a list of strings")
        items.append(item.value)  # raw text: "numpy==1.26" stays as written
    return tuple(items)
