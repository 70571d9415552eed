"""Our schemas against Cog 0.16.12's, for every package under ``packages/``.

``test_matches_golden`` compares with the golden files Cog produced (no network needed).
``test_matches_live_cog`` runs Cog itself, in a venv made with uv, so that a golden file can never
silently drift from what Cog does; it fails when that venv cannot be made (a skip would hide drift).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.cogspec.config import load_config
from modelyard.cogspec.schema import predictor_schema

from .oracle import GOLDEN, ORACLE_REQUIREMENTS, PACKAGES, normalise, oracle_packages, run_oracle

PACKAGE_NAMES = oracle_packages()


def ours(name: str) -> dict:
    package = PACKAGES / name
    return predictor_schema(package, load_config(package))


def test_every_package_has_a_golden_file() -> None:
    packages = sorted(p.name for p in PACKAGES.iterdir() if (p / "cog.yaml").exists())
    assert packages == PACKAGE_NAMES
    assert len(PACKAGE_NAMES) >= 13


@pytest.mark.parametrize("name", PACKAGE_NAMES)
def test_matches_golden(name: str) -> None:
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    assert normalise(ours(name)) == normalise(golden)


def test_normalise_only_evens_out_the_listed_differences() -> None:
    schema = ours("scalars")
    schema["paths"]["/predictions"]["post"]["x-cog-streaming"] = True
    schema["components"]["schemas"]["Input"]["properties"]["prompt"]["x-cog-accept"] = "image/*"
    assert normalise(schema) == normalise(ours("scalars"))
    schema["components"]["schemas"]["Input"]["properties"]["prompt"]["title"] = "Other"
    assert normalise(schema) != normalise(ours("scalars"))


def _uv() -> list[str] | None:
    try:
        import uv  # noqa: F401  (a dependency of modelyard; ships the uv binary)

        return [sys.executable, "-m", "uv"]
    except ImportError:
        found = shutil.which("uv")
        return [found] if found else None


@pytest.fixture(scope="session")
def cog_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    uv = _uv()
    if uv is None:  # uv is a dependency of modelyard: its absence is a broken install
        pytest.fail("uv is not installed")
    root = tmp_path_factory.mktemp("cog016")
    venv = root / "venv"
    env = {**os.environ, "UV_CACHE_DIR": str(root / "cache")}
    try:
        subprocess.run(
            [*uv, "venv", "-q", "-p", "3.11", str(venv)],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        python = venv / "bin" / "python"
        subprocess.run(
            [*uv, "pip", "install", "-q", "--python", str(python), *ORACLE_REQUIREMENTS],
            env=env,
            check=True,
            capture_output=True,
            timeout=180,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        stderr = getattr(exc, "stderr", b"") or b""
        pytest.fail(f"cannot make a venv with {' '.join(ORACLE_REQUIREMENTS)}: {stderr[-300:]!r}")
    return str(python)


@pytest.mark.coglet
@pytest.mark.parametrize("name", PACKAGE_NAMES)
def test_matches_live_cog(cog_python: str, name: str) -> None:
    live = run_oracle(cog_python, Path(PACKAGES / name))
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    assert live == golden, f"golden/{name}.json is stale: regenerate it with oracle.py"
    assert normalise(ours(name)) == normalise(live)
