"""The contract checker for e2e tests: tests/contract is a sibling folder, not a package path."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract.openapi import Contract, Recorder
from live import LiveServer


def contract_and_recorder() -> tuple[Contract, Recorder]:
    return Contract.load(), Recorder()


def recorded_client(server: LiveServer, recorder: Recorder, token: str | None = None) -> Any:
    """The official client, unchanged; the recorder only listens to its httpx client's responses."""
    client = server.replicate(token)
    recorder.attach(client._client)  # a response hook changes nothing the client does
    return client
