"""Loading the user's predictor and converting values at its boundary.

Inputs arrive as validated JSON; file inputs are already local paths. Here they become the types
the signature asks for (`cog.Path`, `cog.File`, `cog.Secret`). Outputs go the other way: models,
dataclasses, enums, numpy values and files become JSON, files as references to paths on disk.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import importlib.util
import inspect
import io
import os
import pathlib
import sys
import tempfile
import typing
from collections.abc import Callable
from typing import Any

from .protocol import FILE_KEY

_UnionType = type(int | None)


class PredictorLoadError(Exception):
    """The predictor reference cannot be loaded into something callable."""


@dataclasses.dataclass
class LoadedPredictor:
    """The callable to run per prediction and what the worker needs to know about it."""

    fn: Callable[..., Any]
    setup: Callable[..., Any] | None
    instance: Any
    hints: dict[str, Any]
    is_async: bool
    concurrent_max: int | None


def load(ref: str, method_names: tuple[str, ...]) -> LoadedPredictor:
    """Import `file.py:Name` the way Cog does and pick `run`/`predict` (or `train`)."""
    file_part, _, name = ref.partition(":")
    path = pathlib.Path(file_part).resolve()
    module_name = path.stem
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PredictorLoadError(f"cannot load {file_part}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    if not name:
        name = next((n for n in ("Runner", "Predictor") if hasattr(module, n)), "Predictor")
    target = getattr(module, name, None)
    if target is None:
        raise PredictorLoadError(f"{file_part} has no {name!r}")
    instance = None
    setup = None
    if inspect.isclass(target):
        instance = target()
        fn = _pick_method(instance, target, method_names, ref)
        setup = getattr(instance, "setup", None)
    else:
        fn = target
    hints = _hints(fn)
    is_async = inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)
    concurrent_max = getattr(fn, "__cog_concurrent_max__", None)
    return LoadedPredictor(fn, setup, instance, hints, is_async, concurrent_max)


def _pick_method(instance: Any, cls: type, names: tuple[str, ...], ref: str) -> Callable[..., Any]:
    defined = [n for n in names if _defined_by_user(cls, n)]
    if len(defined) > 1:
        raise PredictorLoadError(f"{ref} defines both {' and '.join(defined)}(); define only one")
    if not defined:
        raise PredictorLoadError(f"{ref} has no {' or '.join(n + '()' for n in names)} method")
    return getattr(instance, defined[0])


def _defined_by_user(cls: type, name: str) -> bool:
    """True when `name` comes from the user's class rather than cog's base classes."""
    for klass in cls.__mro__:
        if name in vars(klass):
            return not klass.__module__.startswith("cog.")
    return False


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - unresolvable forward references: use the raw annotations
        return dict(getattr(fn, "__annotations__", {}))


def call_setup(predictor: LoadedPredictor, weights: str | None) -> Any:
    """Call `setup()`, passing `weights` when it declares that parameter."""
    if predictor.setup is None:
        return None
    params = inspect.signature(predictor.setup).parameters
    if "weights" not in params:
        return predictor.setup()
    if weights is None and os.path.exists("weights"):
        weights = "weights"
    annotation = _hints(predictor.setup).get("weights")
    if weights is not None and _is_url(weights):
        # A URL stays a string (as coglet passes it) unless setup() asks for a Path or File:
        # then it is downloaded first, as Cog 0.16 did.
        if _cog_kind(_unwrap_optional(annotation)) not in ("Path", "File"):
            return predictor.setup(weights=weights)
        weights = _download(weights)
    return predictor.setup(weights=_convert(weights, annotation) if weights is not None else None)


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://", "data:"))


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, _UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation


def _download(url: str) -> str:
    """Fetch weights given as a URL into a temporary folder (standard library only)."""
    import urllib.parse
    import urllib.request

    name = os.path.basename(urllib.parse.urlparse(url).path) or "weights"
    target = os.path.join(tempfile.mkdtemp(prefix="modelyard-weights-"), name)
    with urllib.request.urlopen(url) as response, open(target, "wb") as out:
        while chunk := response.read(1 << 20):
            out.write(chunk)
    return target


# --- inputs -------------------------------------------------------------------------------


def convert_inputs(predictor: LoadedPredictor, values: dict[str, Any]) -> dict[str, Any]:
    """JSON input values to the annotated types of the predictor's parameters."""
    return {name: _convert(value, predictor.hints.get(name)) for name, value in values.items()}


def _convert(value: Any, annotation: Any) -> Any:
    if value is None or annotation is None:
        return value
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _convert(value, typing.get_args(annotation)[0])
    if origin in (typing.Union, _UnionType):
        inner = _unwrap_optional(annotation)
        return value if inner is annotation else _convert(value, inner)
    if origin in (list, list) and isinstance(value, list):
        (item,) = typing.get_args(annotation) or (None,)
        return [_convert(v, item) for v in value]
    kind = _cog_kind(annotation)
    if kind == "Path":
        return annotation(value)
    if kind == "File":
        return open(value, "rb")
    if kind == "Secret":
        return annotation(value)
    return value


def _cog_kind(annotation: Any) -> str | None:
    if isinstance(annotation, type) and issubclass(annotation, pathlib.PurePath):
        return "Path"  # cog.Path, and a plain pathlib.Path too
    module = getattr(annotation, "__module__", "") or ""
    if module == "cog" or module.startswith("cog."):
        name = getattr(annotation, "__name__", "")
        if name in ("Path", "File", "Secret"):
            return name
    return None


# --- outputs ------------------------------------------------------------------------------


class OutputEncodingError(TypeError):
    """An output value that has no JSON form."""


def encode_output(value: Any, output_dir: Callable[[], str]) -> Any:
    """A JSON-ready copy of `value`; files become `{FILE_KEY: path}` references.

    `output_dir` gives the folder for file objects that must be written out; it is a callable so
    the folder is only made when a prediction returns one.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, os.PathLike):
        path = os.path.abspath(os.fspath(value))
        if not os.path.isfile(path):
            raise OutputEncodingError(f"the output file {path} does not exist")
        return {FILE_KEY: path}
    if isinstance(value, io.IOBase):
        return {FILE_KEY: _save_file_object(value, output_dir)}
    if isinstance(value, dict):
        return {str(k): encode_output(v, output_dir) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [encode_output(v, output_dir) for v in value]
    if isinstance(value, enum.Enum):
        return encode_output(value.value, output_dir)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return encode_output(fields, output_dir)
    if hasattr(value, "model_dump"):  # pydantic v2
        return encode_output(value.model_dump(), output_dir)
    if hasattr(value, "dict") and hasattr(value, "__fields__"):  # pydantic v1
        return encode_output(value.dict(), output_dir)
    if hasattr(value, "tolist"):  # numpy arrays and scalars, without importing numpy
        return encode_output(value.tolist(), output_dir)
    raise OutputEncodingError(f"output of type {type(value).__name__} cannot be encoded as JSON")


def _save_file_object(handle: io.IOBase, output_dir: Callable[[], str]) -> str:
    name = os.path.basename(str(getattr(handle, "name", "") or "")) or "output"
    fd, path = tempfile.mkstemp(dir=output_dir(), suffix="-" + name)
    with os.fdopen(fd, "wb") as out:
        if hasattr(handle, "seek") and handle.seekable():
            handle.seek(0)
        data = handle.read()
        out.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path
