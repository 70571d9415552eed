"""What a pushed package is: unpacked once per content hash, its config, schema and Cog version."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.cogspec.config import CogConfig, load_config
from modelyard.cogspec.errors import CogSpecError
from modelyard.cogspec.schema import predictor_schema
from modelyard.runtime.envspec import sdk_requirement
from modelyard.runtime.package import PackageError, unpack_package
from modelyard.store.blobs import BlobStore


class InvalidPackage(ValueError):
    """The archive is not a Cog package we can run; the message says why, in one line."""


@dataclass(frozen=True)
class PackageInfo:
    directory: Path
    config: CogConfig
    openapi_schema: dict[str, Any]
    cog_version: str  # the Cog SDK the environment installs, e.g. "0.23.1"


def unpacked(blobs: BlobStore, root: Path, package_key: str) -> Path:
    """The folder of a package archive (unpacked on first use, shared afterwards)."""
    directory = root / package_key
    if not directory.exists():
        unpack_package(blobs.path(package_key), directory)
    return directory


def inspect_package(blobs: BlobStore, root: Path, package_key: str) -> PackageInfo:
    """Unpack and read a package without installing or importing anything."""
    try:
        directory = unpacked(blobs, root, package_key)
        config = load_config(directory)
        schema = predictor_schema(directory, config)
    except (PackageError, CogSpecError) as exc:
        raise InvalidPackage(str(exc)) from None
    version = sdk_requirement(config.sdk_version).removeprefix("cog==").lstrip("<>=!~")
    return PackageInfo(directory, config, schema, version)
