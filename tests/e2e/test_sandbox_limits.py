"""Issue 13: an instance that passes a limit of its SKU (docs/hardware.md `limits`) fails its
prediction with an error naming the limit; the server and the next prediction carry on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from live import PACKAGES, LiveServer, Tls, serving
from predicting import start, wait_for

pytestmark = pytest.mark.timeout(300)

HARDWARE = """\
hardware:
  cpu:
    limits:
      memory: 400MiB
      processes: 64
      open_files: 200
      scratch: 64MiB
      output: 8MiB
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    folder = tmp_path_factory.mktemp("hardware")
    (folder / "hardware.yaml").write_text(HARDWARE)
    with serving(
        tmp_path_factory, tls, "limited", "--hardware-file", str(folder / "hardware.yaml")
    ) as live:
        yield live


@pytest.fixture(scope="module")
def hog(limited: LiveServer) -> str:
    return limited.push(PACKAGES / "hog", "admin/hog")


def run(server: LiveServer, version: str, **inputs: Any) -> dict[str, Any]:
    with server.http() as client:
        created = start(client, version, **inputs)
        return wait_for(client, created["id"], {"succeeded", "failed", "canceled"})


MEMORY = "Prediction used more than 400 MiB of memory (the limit of hardware cpu)"
PROCESSES = "Prediction ran more than 64 processes and threads (the limit of hardware cpu)"
SCRATCH = (
    "Prediction wrote more than 64 MiB to /tmp and its home folder (the limit of hardware cpu)"
)
OUTPUT = "Prediction's output files are larger than 8 MiB (the limit of hardware cpu)"


@pytest.mark.parametrize(
    ("kind", "amount", "error"),
    [
        ("memory", 1000, MEMORY),
        ("processes", 100, PROCESSES),
        ("scratch", 500, SCRATCH),
        ("output", 20, OUTPUT),
    ],
)
def test_a_prediction_past_a_limit_fails_naming_it_and_the_next_runs(
    limited: LiveServer, hog: str, kind: str, amount: int, error: str
) -> None:
    failed = run(limited, hog, kind=kind, amount=amount)
    assert failed["status"] == "failed"
    assert failed["error"] == error
    after = run(limited, hog, kind="nothing")
    assert after["status"] == "succeeded" and after["output"] == "nothing done"


def test_one_file_past_the_scratch_size_names_the_limit(limited: LiveServer, hog: str) -> None:
    failed = run(limited, hog, kind="bigfile", amount=100)
    assert failed["status"] == "failed"
    assert failed["error"] == (
        "[Errno 27] File too large (the limit of hardware cpu is 64 MiB of scratch space)"
    )
    assert run(limited, hog, kind="nothing")["status"] == "succeeded"


def test_too_many_open_files_names_the_limit(limited: LiveServer, hog: str) -> None:
    failed = run(limited, hog, kind="files", amount=1000)
    assert failed["status"] == "failed"
    assert "Too many open files" in failed["error"]
    assert "(the limit of hardware cpu is 200 open files)" in failed["error"]
    assert run(limited, hog, kind="nothing")["status"] == "succeeded"


def test_within_the_limits_a_file_output_is_served(limited: LiveServer, hog: str) -> None:
    done = run(limited, hog, kind="output", amount=1)
    assert done["status"] == "succeeded", done
    with limited.http() as client:
        body = client.get(done["output"]).content
    assert body == b"x" * (1 << 20)
