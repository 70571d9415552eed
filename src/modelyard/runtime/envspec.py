"""Model environments' data types: what one is built from, what a built one is, how a build fails.

:class:`EnvironmentSpec` is the part of ``cog.yaml``'s ``build`` section an environment depends on
(:func:`spec_from_config` makes one from a ``CogConfig``); :class:`Environment` is a virtualenv in
the cache; :class:`EnvironmentBuildError` is any failure to make one. Building lives in
:mod:`.environment`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .reqlines import local_requirement_files

DEFAULT_COG_SDK = "cog==0.23.1"

#: Receives each line of a build's progress (step announcements, warnings, tools' output).
Progress = Callable[[str], None]


class EnvironmentBuildError(RuntimeError):
    """A build failed. ``str()`` is one clear line, then the tail of the failing step's output."""

    def __init__(
        self, message: str, log_tail: list[str] | tuple[str, ...] = (), log_path: Path | None = None
    ):
        self.message = message
        self.log_tail = list(log_tail)
        self.log_path = log_path
        text = message
        if self.log_tail:
            text += "\n" + "\n".join("  " + line for line in self.log_tail)
        if log_path is not None:
            text += f"\nFull log: {log_path}"
        super().__init__(text)


@dataclass(frozen=True)
class Environment:
    """A virtualenv in the cache, named by its key (it may not be built yet)."""

    key: str
    path: Path
    python: Path
    python_version: str

    @property
    def bin_dir(self) -> Path:
        return self.path / "bin"


@dataclass(frozen=True)
class EnvironmentSpec:
    """What an environment is built from (a subset of ``cog.yaml``'s ``build`` section)."""

    python_version: str | None = None
    requirements: tuple[str, ...] = ()
    system_packages: tuple[str, ...] = ()
    run_commands: tuple[str, ...] = ()
    pre_install: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict, hash=False)
    cog_sdk: str = DEFAULT_COG_SDK
    gpu: bool = False
    #: ``(path as written in the requirements, "sha256:<hex>")`` of local files/folders referenced
    #: by the requirements; filled from the package dir by :func:`spec_from_config` and ``ensure``.
    local_files: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        for name in ("requirements", "system_packages", "run_commands", "pre_install"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(str(v) for v in value))
        object.__setattr__(self, "environment", dict(self.environment or {}))
        object.__setattr__(self, "local_files", tuple(tuple(x) for x in self.local_files))
        if self.python_version is not None:
            object.__setattr__(self, "python_version", str(self.python_version).strip() or None)

    @classmethod
    def from_config(cls, config: Any) -> EnvironmentSpec:
        return spec_from_config(config)


def sdk_requirement(sdk_version: str | None) -> str:
    """``build.sdk_version`` → the requirement for the Cog SDK (default :data:`DEFAULT_COG_SDK`)."""
    if sdk_version is None or not str(sdk_version).strip():
        return DEFAULT_COG_SDK
    v = str(sdk_version).strip()
    if v.lower() in ("prerelease", "pre"):
        return "cog>=0.0.0.dev0"  # an explicit pre-release bound lets uv pick pre-releases of cog
    if v[0] in "<>=!~":
        return "cog" + v
    return "cog==" + v


def spec_from_config(config: Any) -> EnvironmentSpec:
    """An :class:`EnvironmentSpec` from a ``modelyard.cogspec.config.CogConfig`` (duck-typed)."""
    requirements = tuple(getattr(config, "requirements", ()) or ())
    package_dir = getattr(config, "package_dir", None)
    local = local_requirement_files(requirements, Path(package_dir)) if package_dir else ()
    return EnvironmentSpec(
        python_version=getattr(config, "python_version", None),
        requirements=requirements,
        system_packages=tuple(getattr(config, "system_packages", ()) or ()),
        run_commands=tuple(getattr(config, "run_commands", ()) or ()),
        pre_install=tuple(getattr(config, "pre_install", ()) or ()),
        environment=dict(getattr(config, "environment", None) or {}),
        cog_sdk=sdk_requirement(getattr(config, "sdk_version", None)),
        gpu=bool(getattr(config, "gpu", False)),
        local_files=local,
    )
