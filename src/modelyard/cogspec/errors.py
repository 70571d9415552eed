"""The one error type of the cogspec layer.

Everything that is wrong with a Cog package (its ``cog.yaml``, its predictor source, a default that
breaks its own constraint...) is reported as a :class:`CogSpecError` whose ``str()`` is a single line
pointing at the file and, where known, the line: ``cog.yaml:3: unknown key 'foo' (allowed: ...)``.
Callers (CLI, API, web) show that line as is; they never need a traceback.
"""

from __future__ import annotations


class CogSpecError(Exception):
    """A problem in a Cog package, located by file and line when they are known."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        # Messages are shown on one line; a multi-line message (e.g. from a YAML parser) is folded
        # so that log lines and API error strings stay one line each.
        self.message = " ".join(message.split())
        self.path = path
        self.line = line
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        if self.line is None:
            return f"{self.path}: {self.message}"
        return f"{self.path}:{self.line}: {self.message}"

    def __repr__(self) -> str:
        return f"CogSpecError({self.message!r}, path={self.path!r}, line={self.line!r})"
