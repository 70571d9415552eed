"""Cog 0.16.12 as an oracle for the OpenAPI schema, and the golden files it produced.

Cog 0.16 builds the schema at run time from the imported predictor (pydantic); its
``python -m cog.command.openapi_schema`` prints it for the package in the current directory. The
golden files under ``golden/`` are its output for each package under ``packages/``; regenerate them
with::

    python3.11 tests/cogspec/oracle.py /path/to/venv-with-cog-0.16.12/bin/python

The differences we make on purpose are listed in :data:`DELIBERATE_DIFFERENCES` and applied by
:func:`normalise` before comparing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
PACKAGES = HERE / "packages"
GOLDEN = HERE / "golden"
COG_VERSION = "0.16.12"
# pydantic renders the legacy schema, so its version is pinned with cog's for a stable oracle.
ORACLE_REQUIREMENTS = (f"cog=={COG_VERSION}", "pydantic==2.14.4")

# What we emit differently from Cog 0.16, on purpose (each also noted where the code does it):
DELIBERATE_DIFFERENCES = (
    # Cog >= 0.22 marks @cog.streaming predictors; 0.16 had no such marker.
    "paths./predictions.post.x-cog-streaming",
    # Cog >= 0.22 Input(accept=...): 0.16's Input() has no such argument.
    "x-cog-accept on Input properties",
    # A BaseModel output not named Output: 0.16 adds a component and a $ref, we inline it (as the
    # Go generator of Cog >= 0.17 does). The packages compared here name their model Output.
    "inline object outputs",
    # A choices input of train(): with pydantic 2.14, 0.16 writes {"$ref": ...} where it writes
    # {"allOf": [{"$ref": ...}]} for predict() (and older pydantic for both); we always use allOf.
    "allOf for choices in TrainingInput",
    # `x: Secret = Input(default=None)`: as Cog >= 0.17's Go generator, nullable with a null
    # default (an optional credential); 0.16 showed neither.
    "nullable and default null on Secret inputs defaulting to None",
)


def oracle_packages() -> list[str]:
    """The packages that have a golden file."""
    return sorted(p.stem for p in GOLDEN.glob("*.json"))


def run_oracle(python: str, package: Path) -> dict[str, Any]:
    """Cog 0.16's schema for ``package``, computed by importing it with ``python``."""
    with tempfile.TemporaryDirectory() as tmp:
        # A copy, so that importing the predictor leaves no __pycache__ in the repository.
        work = Path(tmp) / package.name
        shutil.copytree(package, work)
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        proc = subprocess.run(
            [python, "-m", "cog.command.openapi_schema"],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"oracle failed for {package.name}: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def normalise(schema: dict[str, Any]) -> dict[str, Any]:
    """Even out the parts listed in :data:`DELIBERATE_DIFFERENCES`, to compare ours with Cog's.

    Applied to both sides; returns a copy.
    """
    schema = json.loads(json.dumps(schema))
    schema["paths"]["/predictions"]["post"].pop("x-cog-streaming", None)
    for component in ("Input", "TrainingInput"):
        for prop in (
            schema["components"]["schemas"].get(component, {}).get("properties", {}).values()
        ):
            prop.pop("x-cog-accept", None)
            if prop.get("x-cog-secret"):
                prop.pop("nullable", None)
                if "default" in prop and prop["default"] is None:
                    del prop["default"]
            if "$ref" in prop:
                prop["allOf"] = [{"$ref": prop.pop("$ref")}]
    return schema


def main(python: str) -> None:
    GOLDEN.mkdir(exist_ok=True)
    for package in sorted(p for p in PACKAGES.iterdir() if (p / "cog.yaml").exists()):
        schema = run_oracle(python, package)
        (GOLDEN / f"{package.name}.json").write_text(json.dumps(schema, indent=2) + "\n")
        print(f"wrote golden/{package.name}.json")


if __name__ == "__main__":
    main(sys.argv[1])
