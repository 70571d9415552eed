"""Reading ``cog.yaml`` into a :class:`CogConfig`.

The rules are those of Cog's ``config_schema_v1.0.json``: a closed set of top-level and ``build``
keys (an unknown key is an error naming it and its line, so a typo like ``bulid:`` is caught instead
of silently ignored), ``run`` and ``predict`` mutually exclusive, ``python_packages`` and
``python_requirements`` mutually exclusive. The YAML is composed into a node tree rather than loaded
directly so that every error can point at the line it is about.

Predictor references (``predict: "predict.py:Predictor"``) are checked here too: the file must exist,
parse, and define the named class or function. Nothing is imported or executed. Every file the
config names (predictor, trainer, ``python_requirements``, a local weights source) must be inside
the package (see :mod:`.packagefiles`): a pushed ``cog.yaml`` must not read the server's files.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import CogSpecError
from .packagefiles import inside, read_text
from .source import read_module
from .yamlnodes import (
    CONFIG_FILE,
    MAX_CONFIG_BYTES,
    NUMBER_TAGS,
    STR_TAG,
    Entry,
    boolean,
    compose,
    construct,
    integer,
    is_null,
    mapping,
    node_error,
    optional_str,
    str_list,
)

TOP_LEVEL_KEYS = (
    "build",
    "run",
    "predict",
    "train",
    "image",
    "model",
    "concurrency",
    "environment",
    "weights",
)
BUILD_KEYS = (
    "gpu",
    "python_version",
    "python_requirements",
    "python_packages",
    "system_packages",
    "run",
    "pre_install",
    "cuda",
    "cudnn",
    "sdk_version",
)
CONCURRENCY_KEYS = ("max", "default_target")
# Keys Cog once accepted and later removed; published models still carry them (Cog's own examples
# have ``build.fast``), so they are ignored and reported in ``CogConfig.ignored_keys``.
REMOVED_KEYS = ("tests", "build.fast", "build.cog_runtime", "build.python_overrides")
# When a reference has no ``:Name``: Cog >= 0.21 looks for ``Runner``; older models name ``Predictor``.
DEFAULT_CLASSES = ("Runner", "Predictor")

_ENV_ENTRY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)


@dataclass(frozen=True)
class PredictorRef:
    """A resolved ``file.py:Name`` reference: an existing file that defines ``name``."""

    file: Path
    name: str


@dataclass(frozen=True)
class CogConfig:
    """The parts of ``cog.yaml`` the platform uses, validated and normalised."""

    package_dir: Path
    python_version: str | None = None
    python_packages: tuple[str, ...] = ()
    python_requirements: str | None = None
    # What to install: the lines of ``python_requirements`` (comments and blanks dropped) or, for
    # old models, ``python_packages``.
    requirements: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()
    run_commands: tuple[str, ...] = ()
    pre_install: tuple[str, ...] = ()
    environment: dict[str, str] = field(default_factory=dict, hash=False)
    predict: str | None = None
    train: str | None = None
    predictor: PredictorRef | None = None
    trainer: PredictorRef | None = None
    concurrency_max: int = 1
    concurrency_default_target: int | None = None
    gpu: bool = False
    cuda: str | None = None
    cudnn: str | None = None
    sdk_version: str | None = None
    image: str | None = None
    model: str | None = None
    weights: tuple[Any, ...] = field(default=(), hash=False)
    # Removed Cog keys found in the file (see REMOVED_KEYS), for callers to warn about.
    ignored_keys: tuple[str, ...] = ()


_COMMENT = re.compile(r"(^|\s+)#.*$")


def strip_comment(line: str) -> str:
    """A requirements line without its comment (a '#' at the start or after whitespace, as pip)."""
    return _COMMENT.sub("", line)


def load_config(package_dir: Path) -> CogConfig:
    """Read and validate ``package_dir/cog.yaml``; every problem is a one-line CogSpecError."""
    package_dir = Path(package_dir)
    path = package_dir / CONFIG_FILE
    if not path.exists():
        raise CogSpecError(f"not found in {package_dir}", CONFIG_FILE)
    if inside(package_dir, CONFIG_FILE) is None:
        raise CogSpecError("must be a file inside the package, not a link out of it", CONFIG_FILE)
    root = compose(read_text(path, CONFIG_FILE, MAX_CONFIG_BYTES))
    if root is None:  # an empty file: a package without a predictor yet
        return CogConfig(package_dir=package_dir)
    ignored: list[str] = []
    top = mapping(
        root, "cog.yaml", TOP_LEVEL_KEYS, top_level=True, ignored=ignored, removed=REMOVED_KEYS
    )
    values: dict[str, Any] = {"package_dir": package_dir}
    if "build" in top:
        values.update(_build(top["build"], package_dir, ignored))
    if "run" in top and "predict" in top:
        second = max(top["run"][0], top["predict"][0], key=lambda k: k.start_mark.line)
        raise node_error(
            second, "'run' and 'predict' cannot both be set ('predict' is the old name)"
        )
    for key in ("run", "predict"):
        if key in top and (ref := optional_str(top[key], key)) is not None:
            values["predict"] = ref
            where = top[key][0].start_mark.line + 1
            values["predictor"] = parse_ref(ref, package_dir, where=where, key=key)
    if "train" in top and (ref := optional_str(top["train"], "train")) is not None:
        values["train"] = ref
        where = top["train"][0].start_mark.line + 1
        values["trainer"] = parse_ref(ref, package_dir, where=where, key="train")
    for key in ("image", "model"):
        if key in top:
            values[key] = optional_str(top[key], key)
    if "concurrency" in top:
        values.update(_concurrency(top["concurrency"]))
    if "environment" in top:
        values["environment"] = _environment(top["environment"][1])
    if "weights" in top:
        values["weights"] = _weights(top["weights"][1], package_dir)
    return CogConfig(**values, ignored_keys=tuple(sorted(ignored)))


def parse_ref(
    ref: str,
    package_dir: Path,
    default_class: str | Sequence[str] = DEFAULT_CLASSES,
    *,
    where: int | None = None,
    key: str = "predict",
) -> PredictorRef:
    """Resolve ``"predict.py:Predictor"`` (or ``"run.py"``) against the files of the package.

    Without ``:Name`` the first of ``default_class`` that the file defines is used. ``where`` is the
    line of ``cog.yaml`` holding the reference and ``key`` its key, for error messages.
    """
    file_part, sep, name = ref.partition(":")
    file_part, name = file_part.strip(), name.strip()
    if not file_part or (sep and not name.isidentifier()):
        raise CogSpecError(
            f"invalid predictor reference {ref!r} (expected 'file.py:ClassName' or "
            "'file.py:function_name')",
            CONFIG_FILE,
            where,
        )
    file = inside(package_dir, file_part)
    if file is None:
        raise CogSpecError(
            f"{key!r} must name a file inside the package (got {ref!r})", CONFIG_FILE, where
        )
    if not file.is_file():
        raise CogSpecError(f"predictor file {file_part!r} not found", CONFIG_FILE, where)
    module = read_module(file, file_part)
    defined = {**module.classes, **module.functions}
    if sep:
        if name in defined:
            return PredictorRef(file=file, name=name)
        hint = (
            " (it is imported there; point at the file that defines it)"
            if (name in module.imports)
            else ""
        )
        raise CogSpecError(
            f"{file_part!r} defines no class or function {name!r}{hint}", CONFIG_FILE, where
        )
    candidates = (default_class,) if isinstance(default_class, str) else tuple(default_class)
    for candidate in candidates:
        if candidate in defined:
            return PredictorRef(file=file, name=candidate)
    wanted = " or ".join(repr(c) for c in candidates)
    raise CogSpecError(
        f"{file_part!r} defines no {wanted} (name one with {file_part}:Name)", CONFIG_FILE, where
    )


def _build(entry: Entry, package_dir: Path, ignored: list[str]) -> dict[str, Any]:
    if is_null(entry[1]):
        return {}
    build = mapping(entry[1], "build", BUILD_KEYS, ignored=ignored, removed=REMOVED_KEYS)
    values: dict[str, Any] = {}
    if "python_version" in build:
        node = build["python_version"][1]
        # The raw scalar text, so that an unquoted 3.10 stays "3.10" instead of the float 3.1.
        if not (isinstance(node, yaml.ScalarNode) and node.tag in (STR_TAG, *NUMBER_TAGS)):
            raise node_error(node, "'build.python_version' must be a string or a number")
        values["python_version"] = node.value
    if "gpu" in build:
        values["gpu"] = boolean(build["gpu"], "build.gpu")
    for key in ("cuda", "cudnn", "sdk_version"):
        if key in build:
            node = build[key][1]
            if isinstance(node, yaml.ScalarNode) and node.tag in NUMBER_TAGS:
                values[key] = node.value  # cuda: 12.1 written unquoted
            else:
                values[key] = optional_str(build[key], f"build.{key}")
    for key in ("system_packages", "pre_install"):
        if key in build:
            values[key] = str_list(build[key][1], f"build.{key}")
    if "run" in build:
        values["run_commands"] = _run_commands(build["run"][1])
    if "python_packages" in build and "python_requirements" in build:
        second = max(
            build["python_packages"][0],
            build["python_requirements"][0],
            key=lambda k: k.start_mark.line,
        )
        raise node_error(
            second,
            "'build.python_packages' and 'build.python_requirements' cannot both "
            "be set (python_packages is deprecated)",
        )
    if "python_packages" in build:
        packages = str_list(build["python_packages"][1], "build.python_packages")
        values["python_packages"] = values["requirements"] = packages
    if "python_requirements" in build:
        entry = build["python_requirements"]
        name = optional_str(entry, "build.python_requirements")
        if name is not None:
            values["python_requirements"] = name
            values["requirements"] = _read_requirements(package_dir, name, entry[1])
    return values


def _run_commands(node: yaml.Node) -> tuple[str, ...]:
    if is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise node_error(node, "'build.run' must be a list")
    commands = []
    for item in node.value:
        if isinstance(item, yaml.ScalarNode) and item.tag == STR_TAG:
            commands.append(item.value)
            continue
        if not isinstance(item, yaml.MappingNode):
            raise node_error(item, "'build.run' entries must be strings or {command, mounts}")
        run = mapping(item, "build.run[]", ("command", "mounts"))
        if "command" not in run:
            raise node_error(item, "'build.run' entry is missing 'command'")
        command = optional_str(run["command"], "build.run[].command")
        if command is None:
            raise node_error(run["command"][1], "'build.run[].command' must be a string")
        if "mounts" in run:
            _mounts(run["mounts"][1])
        commands.append(command)
    return tuple(commands)


def _mounts(node: yaml.Node) -> None:
    if not isinstance(node, yaml.SequenceNode):
        raise node_error(node, "'build.run[].mounts' must be a list")
    for item in node.value:
        mount = mapping(item, "build.run[].mounts[]", ("type", "id", "target"))
        for key in ("type", "id", "target"):
            if key not in mount:
                raise node_error(item, f"mount is missing {key!r}")
            optional_str(mount[key], f"mounts[].{key}")
        if mount["type"][1].value != "secret":
            raise node_error(mount["type"][1], "mount 'type' must be 'secret'")


def _read_requirements(package_dir: Path, name: str, node: yaml.Node) -> tuple[str, ...]:
    path = inside(package_dir, name)
    if path is None:
        raise node_error(
            node, f"'build.python_requirements' must be a path inside the package (got {name!r})"
        )
    if not path.is_file():
        raise node_error(node, f"python_requirements file {name!r} not found")
    try:
        text = read_text(path, name)
    except CogSpecError as exc:
        raise node_error(node, f"cannot read python_requirements file {name!r}: {exc.message}")
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        # pip joins lines ending in a backslash, and a '#' after whitespace starts a comment.
        line = strip_comment(raw).rstrip()
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = (pending + line.strip()).strip()
        pending = ""
        if line:
            lines.append(line)
    if pending.strip():
        lines.append(pending.strip())
    return tuple(lines)


def _concurrency(entry: Entry) -> dict[str, Any]:
    if is_null(entry[1]):
        return {}
    conc = mapping(entry[1], "concurrency", CONCURRENCY_KEYS)
    if "max" not in conc:
        raise node_error(entry[1], "'concurrency.max' is required")
    values: dict[str, Any] = {"concurrency_max": integer(conc["max"], "concurrency.max")}
    if values["concurrency_max"] < 1:
        raise node_error(conc["max"][1], "'concurrency.max' must be at least 1")
    if "default_target" in conc:
        target = integer(conc["default_target"], "concurrency.default_target")
        values["concurrency_default_target"] = target
    return values


def _environment(node: yaml.Node) -> dict[str, str]:
    env: dict[str, str] = {}
    for entry in str_list(node, "environment"):
        match = _ENV_ENTRY.match(entry)
        if match is None:
            line = next(i for i in node.value if i.value == entry)
            raise node_error(line, f"environment entry {entry!r} must look like NAME=value")
        env[match.group(1)] = match.group(2)
    return env


def _weights(node: yaml.Node, package_dir: Path) -> tuple[Any, ...]:
    # Experimental in Cog; kept as plain data after checking its shape.
    if is_null(node):
        return ()
    if not isinstance(node, yaml.SequenceNode):
        raise node_error(node, "'weights' must be a list")
    weights = []
    for item in node.value:
        entry = mapping(item, "weights[]", ("name", "target", "source"))
        for key in ("name", "target", "source"):
            if key not in entry:
                raise node_error(item, f"weights entry is missing {key!r}")
        for uri in _source_uris(entry["source"][1]):
            _check_local_source(uri, package_dir)
        weights.append(construct(item))
    return tuple(weights)


_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _source_uris(node: yaml.Node) -> list[yaml.ScalarNode]:
    """The scalars naming where weights come from: the source itself, its ``uri``, or those of
    each item of a list of sources."""
    if isinstance(node, yaml.ScalarNode):
        return [node]
    if isinstance(node, yaml.SequenceNode):
        return [uri for item in node.value for uri in _source_uris(item)]
    if isinstance(node, yaml.MappingNode):
        return [v for k, v in node.value if k.value == "uri" and isinstance(v, yaml.ScalarNode)]
    return []


def _check_local_source(node: yaml.ScalarNode, package_dir: Path) -> None:
    """A local source (a path, or ``file://``) must be inside the package; a remote one
    (``hf://``, ``https://``...) is the worker's to fetch."""
    uri = node.value
    if node.tag != STR_TAG or (_SCHEME.match(uri) and not uri.startswith("file://")):
        return
    if inside(package_dir, uri.removeprefix("file://")) is None:
        raise node_error(
            node, f"'weights[].source' must be a path inside the package or a URL (got {uri!r})"
        )
