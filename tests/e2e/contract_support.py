"""The contract checker for e2e tests: tests/contract is a sibling folder, not a package path."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract.openapi import Contract, Recorder


def contract_and_recorder() -> tuple[Contract, Recorder]:
    return Contract.load(), Recorder()
