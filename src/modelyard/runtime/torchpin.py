"""Keeping CPU machines off CUDA torch: the constraint that pins ``torch`` to a local CPU wheel.

An unpinned ``torch`` (written in the requirements or pulled in by another package) resolves to a
multi-GB CUDA build from PyPI. When a ``find-links`` folder of pip's configuration holds a CPU
build (``+cpu``) of torch for the environment's Python and this machine, :func:`cpu_torch_pin`
constrains ``torch`` to the newest one, unless a requirement excludes it or names its own URL.
The builder skips the constraint for a ``gpu: true`` model on a machine with a GPU
(:func:`gpu_available`), and retries an install without it when resolution fails because of it.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import pythons
from .reqlines import clean, requirement_name, requirement_parts


def gpu_available() -> bool:
    """An NVIDIA GPU is visible (``MODELYARD_GPU=0/1`` overrides the detection)."""
    forced = os.environ.get("MODELYARD_GPU")
    if forced is not None and forced.strip():
        return forced.strip().lower() not in ("0", "false", "no", "off")
    if Path("/proc/driver/nvidia/version").exists():
        return True
    return any(Path("/dev").glob("nvidia[0-9]*"))


def _parse_version(v: str) -> Any:
    try:
        from packaging.version import Version

        return Version(v)
    except (ImportError, ValueError):
        nums = re.findall(r"\d+", v.split("+")[0])
        return tuple(int(n) for n in nums)


def _spec_allows(specifier: str, version: str) -> bool | None:
    """Whether a PEP 440 specifier allows ``version``; None when it cannot be decided."""
    specifier = specifier.split(";", 1)[0].strip().strip("()")
    if not specifier:
        return True
    try:
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(specifier).contains(version, prereleases=True)
    except (ImportError, ValueError):
        return None


def local_torch_cpu_wheels(find_links_dirs: list[Path], python: pythons.PythonInstall) -> list[str]:
    """Versions of CPU torch wheels (``+cpu``) in the given folders usable by ``python``, oldest
    first."""
    if not sys.platform.startswith("linux"):  # the platform tags below are Linux's
        return []
    tag = "cp{}{}".format(*python.minor)
    machine = platform.machine().lower()
    versions = []
    for d in find_links_dirs:
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for name in names:
            if not name.endswith(".whl"):
                continue
            parts = name[: -len(".whl")].split("-")
            if len(parts) < 5 or parts[0].lower() != "torch":
                continue
            version, pytags, plats = parts[1], parts[-3].split("."), parts[-1].split(".")
            if "+cpu" not in version:
                continue
            if tag not in pytags and "py3" not in pytags:
                continue
            if not any(
                p == "any" or (p.startswith(("manylinux", "linux")) and p.endswith(machine))
                for p in plats
            ):
                continue
            versions.append(version)
    return sorted(set(versions), key=_parse_version)


def cpu_torch_pin(
    requirements: Iterable[str], python: pythons.PythonInstall, find_links_dirs: list[Path]
) -> tuple[str | None, str | None]:
    """``(constraint, warning)``: ``torch==<newest local CPU wheel>`` or None, and why not when a
    requirement excludes that wheel (it will be downloaded instead)."""
    versions = local_torch_cpu_wheels(find_links_dirs, python)
    if not versions:
        return None, None
    best = versions[-1]
    for raw in requirements:
        line = clean(raw)
        parts = requirement_parts(line)
        if parts is None or parts[0] != "torch":
            continue
        rest = parts[1]
        if rest.startswith("@"):
            return None, None  # a direct URL: the model chose its own build
        if not _spec_allows(rest, best):  # excluded, or undecidable (None)
            return None, (
                f"warning: requirement '{line}' excludes the local CPU build of torch "
                f"({best}); it will be downloaded and may be a large CUDA build"
            )
    return f"torch=={best}", None


def mentions_torch(requirements: Iterable[str]) -> bool:
    """A requirement names torch or one of its ``torch*`` companions (torchvision, ...)."""
    return any((requirement_name(clean(r)) or "").startswith("torch") for r in requirements)
