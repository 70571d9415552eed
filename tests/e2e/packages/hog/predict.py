# Uses too much of something: `memory` (MiB, touched), `processes` (sleepers), `files` (kept
# open), `scratch` (MiB files written to /tmp), `bigfile` (one file of MiB), `output` (a file of that many MiB); `nothing` is cheap.
import subprocess
import time
from typing import Any

from cog import BasePredictor, Input, Path


class Predictor(BasePredictor):
    def predict(
        self,
        kind: str = Input(
            choices=["nothing", "memory", "processes", "files", "scratch", "bigfile", "output"]
        ),
        amount: int = Input(default=0, ge=0),
    ) -> Any:
        held: list[object] = []
        if kind == "memory":
            for _ in range(amount):
                held.append(bytearray(b"x" * (1 << 20)))
                time.sleep(0.005)
        elif kind == "processes":
            for _ in range(amount):
                held.append(subprocess.Popen(["sleep", "30"]))
        elif kind == "files":
            for _ in range(amount):
                held.append(open("/dev/null", "rb"))  # noqa: SIM115 - kept open on purpose
        elif kind == "scratch":  # many files of 1 MiB
            for n in range(amount):
                with open(f"/tmp/filler-{n}", "wb") as out:
                    out.write(b"x" * (1 << 20))
                time.sleep(0.005)
        elif kind == "bigfile":  # one file
            with open("/tmp/filler", "wb") as out:
                for _ in range(amount):
                    out.write(b"x" * (1 << 20))
                    out.flush()
        elif kind == "output":
            path = Path("/tmp/big.bin")
            path.write_bytes(b"x" * (amount << 20))
            return path
        if kind != "nothing":
            time.sleep(30)  # keep it all while the limits are checked
        return f"{kind} done"
