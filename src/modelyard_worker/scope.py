"""`cog.current_scope()` for predictions run by Modelyard: metrics and request context.

The `cog` SDK asks `coglet._sdk.current_scope()` for the scope; the worker points that at
`current_scope` below. Metric names follow Cog's rules: dot-separated segments of letters, digits
and underscores, at most four segments and 128 characters, not `predict_time` nor under `cog.`.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

from . import protocol

_SEGMENT = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
MODES: tuple[protocol.MetricMode, ...] = ("replace", "incr", "append")

# (name, value, mode) -> None, called after the metric is recorded
MetricSink = Callable[[str, Any, protocol.MetricMode], None]


class MetricError(ValueError):
    """A metric name, mode or value that Cog would reject; it fails the prediction."""


def check_metric_name(name: str) -> None:
    segments = name.split(".")
    if (
        not name
        or len(name) > 128
        or len(segments) > 4
        or name == "predict_time"
        or segments[0] == "cog"
        or not all(
            _SEGMENT.fullmatch(s) and not s.endswith("_") and "__" not in s for s in segments
        )
    ):
        raise MetricError(f"invalid metric name: {name!r}")


class Metrics(MutableMapping[str, Any]):
    """The metrics of one prediction; dotted names nest when they are sent."""

    def __init__(self, sink: MetricSink | None) -> None:
        self._values: dict[str, Any] = {}
        self._sink = sink

    def record(self, name: str, value: Any, mode: str = "replace") -> None:
        check_metric_name(name)
        if mode not in MODES:
            raise MetricError(f"invalid metric mode {mode!r} (use one of {', '.join(MODES)})")
        if value is not None:
            self._check_value(name, value)
        if value is None:
            self._values.pop(name, None)
        elif mode == "replace":
            old = self._values.get(name)
            if old is not None and type(old) is not type(value) and not _both_numbers(old, value):
                raise MetricError(f"metric {name!r} changed type from {type(old).__name__}")
            self._values[name] = value
        elif mode == "incr":
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise MetricError(f"metric {name!r}: incr needs a number")
            self._values[name] = self._values.get(name, 0) + value
        else:
            existing = self._values.get(name)
            self._values[name] = (existing if isinstance(existing, list) else []) + [value]
        if self._sink is not None:
            self._sink(name, value, mode)

    def _check_value(self, name: str, value: Any) -> None:
        """Refuse what could not be reported: non-JSON values, names that clash when nested."""
        try:
            protocol.encode({"value": value})
        except protocol.FrameTooLarge as exc:
            raise MetricError(f"metric {name!r} is too large to send: {exc}") from None
        except (TypeError, ValueError):
            raise MetricError(f"metric {name!r}: {value!r} is not a JSON value") from None
        for other in self._values:
            if other != name and (other.startswith(name + ".") or name.startswith(other + ".")):
                raise MetricError(f"metric {name!r} clashes with metric {other!r}")

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def __setitem__(self, name: str, value: Any) -> None:
        self.record(name, value)

    def __delitem__(self, name: str) -> None:
        self.record(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def nested(self) -> dict[str, Any]:
        """The values with dotted names turned into nested objects, as Cog reports them."""
        out: dict[str, Any] = {}
        for name, value in self._values.items():
            *parents, leaf = name.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return out


def _both_numbers(a: Any, b: Any) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))


class Scope:
    """What `current_scope()` returns during a prediction."""

    def __init__(self, sink: MetricSink | None = None, context: dict[str, str] | None = None):
        self.metrics = Metrics(sink)
        self.context: dict[str, str] = dict(context or {})

    def record_metric(self, name: str, value: Any, mode: str = "replace") -> None:
        self.metrics.record(name, value, mode)


_NO_SCOPE = Scope()
_current: contextvars.ContextVar[Scope] = contextvars.ContextVar(
    "modelyard_scope", default=_NO_SCOPE
)


def current_scope() -> Scope:
    """The running prediction's scope, or a scope that nobody reads outside a prediction."""
    return _current.get()


def enter(scope: Scope) -> contextvars.Token[Scope]:
    return _current.set(scope)


def leave(token: contextvars.Token[Scope]) -> None:
    _current.reset(token)
