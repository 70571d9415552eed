"""The one error type of the cogspec layer.

Everything that is wrong with a Cog package (its ``cog.yaml``, its predictor source, a default that
breaks its own constraint...) is reported as a :class:`CogSpecError` whose ``str()`` is a single line
pointing at the file and, where known, the line: ``cog.yaml:3: unknown key 'foo' (allowed: ...)``.
Callers (CLI, API, web) show that line as is; they never need a traceback. A message quotes what
the package wrote (a key, a value), so it is cut to :data:`MAX_MESSAGE` characters: a hostile
package cannot make an error body of megabytes.
"""

from __future__ import annotations

MAX_MESSAGE = 500  # characters of an error message; the rest is cut with an ellipsis


def one_line(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` folded onto one line and cut to ``limit`` characters."""
    folded = " ".join(message.split())
    return folded if len(folded) <= limit else folded[: limit - 1] + "…"


class CogSpecError(Exception):
    """A problem in a Cog package, located by file and line when they are known."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None) -> None:
        # Messages are shown on one line; a multi-line message (e.g. from a YAML parser) is folded
        # so that log lines and API error strings stay one line each.
        self.message = one_line(message)
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
