"""The inline Cog packages of the differential tests, written to a temporary folder at setup.

Each is small and aimed at the documented differences (docs/differences-from-cog.md): the tests
pin each difference on both sides with them, and replay their inputs like fixture cases.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from .packages_types import TYPES_PACKAGES
from .support import Package

COG_YAML = 'build:\n  python_version: "3.11"\npredict: "predict.py:Predictor"\n'

INLINE: dict[str, dict[str, str]] = {
    # Scalars, constraints, choices, lists, optionals, secrets; logs; exceptions; sys.exit.
    "diff_basic": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            import sys
            from typing import List, Optional
            from cog import BasePredictor, Input, Secret

            class Predictor(BasePredictor):
                def predict(
                    self,
                    text: str = Input(default="world", max_length=10),
                    n: int = Input(default=1, ge=1, le=10),
                    scale: float = Input(default=1.5, ge=0.0),
                    flag: bool = False,
                    color: str = Input(default="red", choices=["red", "green"]),
                    maybe: Optional[str] = Input(default=None),
                    nums: List[int] = Input(default=[1, 2]),
                    token: Secret = Input(default=None),
                    mode: str = "ok",
                ) -> str:
                    print("predicting", text)
                    print("to stderr", file=sys.stderr)
                    if mode == "raise":
                        raise ValueError("this is a value error")
                    if mode == "empty":
                        raise RuntimeError()
                    if mode == "exit":
                        sys.exit(3)
                    secret = token.get_secret_value() if token is not None else None
                    return f"{text}|{n!r}|{scale!r}|{flag}|{color}|{maybe}|{nums}|{secret}"
        """,
    },
    # A required input, an iterator output, a failure in the middle of the stream.
    "diff_stream": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            from typing import Iterator
            from cog import BasePredictor

            class Predictor(BasePredictor):
                def predict(self, n: int, fail_at: int = -1) -> Iterator[str]:
                    for i in range(n):
                        if i == fail_at:
                            raise ValueError(f"failed at {i}")
                        print(f"item {i}")
                        yield f"chunk{i}"
        """,
    },
    # Files in, files out, a model output, metrics.
    "diff_files": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            import tempfile
            from typing import List
            from cog import BaseModel, BasePredictor, Input, Path, current_scope

            class Result(BaseModel):
                files: List[Path]
                size: int

            class Predictor(BasePredictor):
                def predict(self, f: Path = Input(default=None), count: int = 2,
                            ext: str = ".txt") -> Result:
                    folder = Path(tempfile.mkdtemp())
                    scope = current_scope()
                    scope.record_metric("count", count)
                    scope.record_metric("calls", 1, mode="incr")
                    scope.record_metric("calls", 1, mode="incr")
                    scope.record_metric("image.ext", ext)
                    if f is not None:
                        data = f.read_bytes()
                        (folder / ("echo" + ext)).write_bytes(data[::-1])
                        return Result(files=[folder / ("echo" + ext)], size=len(data))
                    files = []
                    for i in range(count):
                        (folder / f"out{i}{ext}").write_text(f"file {i}")
                        files.append(folder / f"out{i}{ext}")
                    if count == 13:
                        scope.record_metric("predict_time", 1.0)
                    return Result(files=files, size=0)
        """,
    },
    # Outputs at the edges of JSON, log lines without newlines, unions, regexes, dict inputs.
    "diff_outputs": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            import sys
            from typing import Any, List, Optional, Union
            from cog import BasePredictor, Input, Path

            class Predictor(BasePredictor):
                def predict(
                    self,
                    what: str = "ok",
                    level: int = Input(default=1, choices=[1, 2, 3]),
                    code: str = Input(default="ab", regex=r"^[a-z]+$"),
                    tags: List[str] = Input(default=["x"], min_length=1),
                    both: Union[int, str] = Input(default=1),
                    maybe_n: Optional[int] = Input(default=None),
                    blob: dict = Input(default={"a": 1}),
                ) -> Any:
                    if what == "echo":
                        return [level, code, tags, both, maybe_n, blob]
                    if what == "none":
                        return None
                    if what == "tuple":
                        return (1, "two")
                    if what == "bytes":
                        return b"abc"
                    if what == "set":
                        return {1}
                    if what == "nan":
                        return float("nan")
                    if what == "bigint":
                        return 2**70
                    if what == "missing_file":
                        return Path("/nonexistent/output.txt")
                    if what == "partial_lines":
                        print("no newline", end="")
                        sys.stdout.write("x\\rprogress 50%\\rprogress 100%\\n")
                        print("tail without newline", end="")
                        return "p"
                    if what == "profiled":  # what cProfile, coverage or a debugger does
                        sys.setprofile(lambda *args: None)
                        try:
                            return sum(len(str(i)) for i in range(100))
                        finally:
                            sys.setprofile(None)
                    if what == "hello":
                        print("hello")
                        return "h"
                    if what == "unicode_error":
                        print("héllo ✓ 日本")
                        raise ValueError("naïve ✗\\nsecond line")
                    if what == "exception_object":
                        raise Exception({"k": 1})
                    return what
        """,
    },
    # The worker dies in the middle of a prediction.
    "diff_crash": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            import os
            from cog import BasePredictor

            class Predictor(BasePredictor):
                def predict(self, crash: bool = False) -> str:
                    print("crash" if crash else "fine", flush=True)
                    if crash:
                        os._exit(7)
                    return "alive"
        """,
    },
    # setup() raises.
    "diff_setup_failure": {
        "cog.yaml": COG_YAML,
        "predict.py": """
            from cog import BasePredictor

            class Predictor(BasePredictor):
                def setup(self):
                    print("loading")
                    raise RuntimeError("setup exploded")

                def predict(self, x: int = 1) -> int:
                    return x
        """,
    },
    # Two slots; a prediction holds its slot until a file appears (no timing involved).
    "diff_busy": {
        "cog.yaml": COG_YAML + "concurrency:\n  max: 2\n",
        "predict.py": """
            import asyncio, os
            from cog import BasePredictor

            class Predictor(BasePredictor):
                async def predict(self, gate: str = "", name: str = "x") -> str:
                    while gate and not os.path.exists(gate):
                        await asyncio.sleep(0.01)
                    return name
        """,
    },
    # Training with a function.
    "diff_train": {
        "cog.yaml": COG_YAML + 'train: "train.py:train"\n',
        "predict.py": """
            from cog import BasePredictor

            class Predictor(BasePredictor):
                def predict(self) -> str:
                    return "p"
        """,
        "train.py": """
            from cog import Input

            def train(steps: int = Input(default=2, ge=1), name: str = "w") -> str:
                print("training", steps)
                return f"{name}-{steps}"
        """,
    },
}


INLINE.update(TYPES_PACKAGES)  # the rest of Cog's type system (issue 14)


def write_inline(name: str, folder: Path) -> Path:
    """Write the inline package ``name`` into ``folder`` (an empty temporary folder)."""
    for filename, text in INLINE[name].items():
        (folder / filename).write_text(textwrap.dedent(text).lstrip("\n"))
    return folder


def inline(name: str, mode: str = "predict") -> list[Package]:
    """The ``pair`` parameter of a test that pins a difference on one inline package."""
    return [Package(name, None, mode)]
