"""`.dockerignore` patterns, matched as Docker (moby's patternmatcher) matches them.

`modelyard push` leaves out of a package what its `.dockerignore` excludes, as `cog build` leaves it
out of the build context; the rules are in docs/push.md.
"""

from __future__ import annotations

import os
import re
from pathlib import Path


class PatternError(ValueError):
    """A pattern that cannot be read (an unclosed `[`); `str()` is one line."""


class DockerIgnore:
    """The patterns of a `.dockerignore`, matched as Docker (moby's patternmatcher) matches them."""

    def __init__(self, lines: list[str]) -> None:
        self.patterns: list[tuple[re.Pattern[str], bool]] = []
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            if negate:
                line = line[1:].strip()
            line = os.path.normpath(line).lstrip("/") if line else line
            if not line or line == ".":
                continue
            self.patterns.append((re.compile(_pattern_regex(line)), negate))
        self.has_negations = any(negate for _, negate in self.patterns)

    @classmethod
    def read(cls, directory: Path) -> DockerIgnore:
        path = directory / ".dockerignore"
        if not path.is_file():
            return cls([])
        return cls(path.read_text(encoding="utf-8", errors="replace").splitlines())

    def excludes(self, relpath: str) -> bool:
        """Whether the slash-separated path relative to the package root is left out."""
        parents = relpath.split("/")[:-1]
        prefixes = ["/".join(parents[: i + 1]) for i in range(len(parents))]
        excluded = False
        for regex, negate in self.patterns:
            if negate != excluded:  # only an exclusion can flip an excluded path back
                continue
            if regex.match(relpath) or any(regex.match(p) for p in prefixes):
                excluded = not negate
        return excluded


def _pattern_regex(pattern: str) -> str:
    out, i = ["^"], 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
            out.append(".*" if i >= len(pattern) else "(.*/)?")
            continue
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif ch == "[":
            i = _char_class(pattern, i, out)
        else:
            out.append(re.escape(ch))
        i += 1
    out.append("$")
    return "".join(out)


def _char_class(pattern: str, start: int, out: list[str]) -> int:
    """Append the regex of the `[...]` class at `start` (`^` negates, `\\` escapes, `a-z` ranges);
    return the index of its closing `]`."""
    i = start + 1
    parts = ["["]
    if pattern.startswith("^", i):
        parts.append("^")
        i += 1
    while i < len(pattern) and pattern[i] != "]":
        if pattern[i] == "\\" and i + 1 < len(pattern):
            i += 1
            parts.append(re.escape(pattern[i]))
        else:
            parts.append("-" if pattern[i] == "-" else re.escape(pattern[i]))
        i += 1
    if i >= len(pattern):
        raise PatternError(f".dockerignore: unclosed '[' in {pattern!r}")
    out.append("".join(parts) + "]")
    return i
