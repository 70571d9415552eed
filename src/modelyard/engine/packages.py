"""What a pushed package is: unpacked once per content hash, its config, schema and Cog version.

Unpacking checks the archive against the server's `PackageLimits` before extracting anything;
reading checks that every file `cog.yaml` names, requirement lines included (``-r x.txt``,
``./wheels/x.whl``), stays inside the package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.cogspec.config import CogConfig, load_config
from modelyard.cogspec.errors import CogSpecError
from modelyard.cogspec.packagefiles import inside
from modelyard.cogspec.schema import predictor_schema
from modelyard.runtime.envspec import sdk_requirement
from modelyard.runtime.package import (
    DEFAULT_LIMITS,
    PackageError,
    PackageLimits,
    PackageTooLarge,
    unpack_package,
)
from modelyard.runtime.reqlines import local_paths
from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore


class InvalidPackage(ValueError):
    """The archive is not a Cog package we can run; the message says why, in one line.
    `too_large`: it is refused for one of the server's package limits."""

    def __init__(self, message: str, *, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


def package_limits(settings: Settings) -> PackageLimits:
    """The limits a pushed archive is unpacked under (serve's --package-* options)."""
    return PackageLimits(
        max_bytes=settings.package_max_expanded,
        max_entries=settings.package_max_entries,
        max_ratio=settings.package_max_ratio,
    )


@dataclass(frozen=True)
class PackageInfo:
    directory: Path
    config: CogConfig
    openapi_schema: dict[str, Any]
    cog_version: str  # the Cog SDK the environment installs, e.g. "0.23.1"


def unpacked(
    blobs: BlobStore, root: Path, package_key: str, limits: PackageLimits = DEFAULT_LIMITS
) -> Path:
    """The folder of a package archive (unpacked on first use, shared afterwards)."""
    directory = root / package_key
    if not directory.exists():
        unpack_package(blobs.path(package_key), directory, limits=limits)
    return directory


def inspect_package(
    blobs: BlobStore, root: Path, package_key: str, limits: PackageLimits = DEFAULT_LIMITS
) -> PackageInfo:
    """Unpack and read a package without installing or importing anything."""
    try:
        directory = unpacked(blobs, root, package_key, limits)
        config = load_config(directory)
        check_requirement_paths(directory, config)
        schema = predictor_schema(directory, config)
    except PackageTooLarge as exc:
        raise InvalidPackage(str(exc), too_large=True) from None
    except (PackageError, CogSpecError) as exc:
        raise InvalidPackage(str(exc)) from None
    version = sdk_requirement(config.sdk_version).removeprefix("cog==").lstrip("<>=!~")
    return PackageInfo(directory, config, schema, version)


def check_requirement_paths(directory: Path, config: CogConfig) -> None:
    """A requirement line naming a local path (``-r``, ``-e``, a wheel, ``file:``) is read or
    installed by the environment builder: it must name something inside the package."""
    source = config.python_requirements or "cog.yaml"
    for path in local_paths(config.requirements):
        if inside(directory, os.path.expanduser(path)) is None:
            raise CogSpecError(
                f"the requirement {path!r} must be a path inside the package", source
            )
