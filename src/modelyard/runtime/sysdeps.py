"""System (apt) packages a model's ``cog.yaml`` asks for under ``build.system_packages``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

APT_LISTS = Path("/var/lib/apt/lists")
#: ``apt-get update`` runs before installing only when the package lists are older than this.
APT_LISTS_MAX_AGE = 24 * 3600


def package_name(spec: str) -> str:
    """``"ffmpeg=7:5.1"`` → ``"ffmpeg"`` (apt's ``name=version`` / ``name/release`` forms)."""
    return spec.strip().split("=", 1)[0].split("/", 1)[0]


def dpkg_available() -> bool:
    return shutil.which("dpkg-query") is not None


def is_installed(name: str) -> bool:
    """``dpkg-query -W -f='${Status}' name`` says ``install ok installed``."""
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", package_name(name)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and proc.stdout.strip().endswith(" installed")


def missing_packages(packages: list[str] | tuple[str, ...]) -> list[str]:
    """The packages (as written) that dpkg does not report as installed, in order, deduplicated."""
    out: list[str] = []
    for pkg in packages:
        if pkg and pkg not in out and not is_installed(pkg):
            out.append(pkg)
    return out


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def install_command(packages: list[str]) -> list[str]:
    return ["apt-get", "install", "-y", "-o", "DPkg::Lock::Timeout=300", *packages]


def apt_lists_stale(max_age: float = APT_LISTS_MAX_AGE) -> bool:
    """True when apt has no package lists, or they are older than ``max_age`` seconds."""
    try:
        mtimes = [p.stat().st_mtime for p in APT_LISTS.iterdir() if p.is_file()]
    except OSError:
        return True
    return not mtimes or time.time() - max(mtimes) > max_age


def apt_env() -> dict[str, str]:
    env = dict(os.environ)
    env["DEBIAN_FRONTEND"] = "noninteractive"
    return env
