"""What a spec resolves to on this machine, and the key that names its environment.

A :class:`Plan` fixes everything a build depends on before anything is built: the spec with the
current hashes of the local files its requirements reference, the interpreter chosen for it, the
torch constraint. :func:`environment_key` hashes those, so two models with the same dependencies
share one environment, and a change to any of them (or to :data:`BUILD_FORMAT`) gives a new one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

from . import pythons
from .envspec import EnvironmentBuildError, EnvironmentSpec
from .reqlines import clean, local_requirement_files

#: Bumped when the layout or the build steps change, so old environments are not reused.
BUILD_FORMAT = 1


@dataclass(frozen=True)
class Plan:
    """A spec resolved on this machine: everything its build depends on, and its key."""

    spec: EnvironmentSpec
    python: pythons.PythonInstall
    python_warning: str | None
    torch_pin: str | None
    torch_warning: str | None
    key: str


def with_local_files(spec: EnvironmentSpec, package_dir: Path | str | None) -> EnvironmentSpec:
    """``spec`` with the current hashes of the local files its requirements reference (relative
    paths are read from ``package_dir``; ``spec`` as is when there is none)."""
    if package_dir is None:
        return spec
    local = local_requirement_files(spec.requirements, Path(package_dir))
    return spec if local == spec.local_files else dataclasses.replace(spec, local_files=local)


def resolve_python(
    spec: EnvironmentSpec, interpreters: tuple[pythons.PythonInstall, ...] | None
) -> tuple[pythons.PythonInstall, str | None]:
    """The local interpreter for ``spec`` and a warning when it is not the version asked for."""
    try:
        return pythons.choose_python(spec.python_version, interpreters)
    except (LookupError, ValueError) as e:
        raise EnvironmentBuildError(str(e)) from None


def environment_key(
    spec: EnvironmentSpec, python: pythons.PythonInstall, torch_pin: str | None
) -> str:
    """24 hex digits naming the environment (see the module docstring)."""
    env = spec.environment
    if spec.run_commands or spec.pre_install:  # shell commands may read any variable
        env_part = dict(sorted(env.items()))
    else:  # only the installers' own settings change what gets installed
        env_part = {k: v for k, v in sorted(env.items()) if k.startswith(("PIP_", "UV_"))}
    doc = {
        "format": BUILD_FORMAT,
        "python": python.version,
        "requirements": [line for line in (clean(r) for r in spec.requirements) if line],
        "local_files": [list(x) for x in spec.local_files],
        "sdk": spec.cog_sdk,
        "pre_install": list(spec.pre_install),
        "run": list(spec.run_commands),
        "system_packages": sorted(set(spec.system_packages)),
        "environment": env_part,
        "torch": torch_pin,
        "platform": f"{sys.platform}-{platform.machine()}",
    }
    blob = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]
