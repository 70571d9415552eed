# ruff: noqa
# fmt: off
import typing

from cog import Input


def predict(text: str = Input(description="Text to echo"), repeat: int = 2) -> typing.Iterator[str]:
    for _ in range(repeat):
        yield text
