# ruff: noqa
# fmt: off
from collections.abc import Iterator

from cog import Path


def helper() -> Iterator[Path]:
    yield Path("x")


def run_model(flag: bool = False) -> dict:
    return {"flag": flag}
