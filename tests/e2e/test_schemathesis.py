"""Schemathesis over Replicate's OpenAPI spec, against a live server: every operation of the
spec gets generated requests (valid ones, and in the coverage phase boundary and invalid ones),
checked with `not_a_server_error` and `response_schema_conformance`.

The spec is the in-repo copy (`tests/contract/replicate-openapi.json`), so a clean clone runs it.
Generation is seeded and derandomized, with no example database, so CI sees the same requests on
every run; the number of examples is bounded so the whole file stays within a few minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from live import LiveServer, Tls, serving
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.schemas import OpenApiSchema

SPEC = Path(__file__).parents[1] / "contract" / "replicate-openapi.json"
SEED = 13
MAX_EXAMPLES = 50  # per operation in the fuzzing phase; the coverage phase adds its own cases
CHECKS = ("not_a_server_error", "response_schema_conformance")


def config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            # Half the owners and model names are real ones (a public model with no version, so
            # nothing boots and no `Prefer: wait` holds), so the routes past the lookups are
            # fuzzed too; the other half are random.
            "dictionaries": {"owner": {"values": ["admin"]}, "model": {"values": ["empty"]}},
            "parameters": {
                "path.model_owner": {"dictionary": "owner", "probability": 0.5},
                "path.model_name": {"dictionary": "model", "probability": 0.5},
                "path.deployment_owner": {"dictionary": "owner", "probability": 0.5},
            },
        }
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    # No rate limits: the run sends thousands of requests a minute from one token.
    with serving(
        tmp_path_factory, tls, "schemathesis",
        "--creates-per-minute", "0", "--requests-per-minute", "0",
    ) as server:  # fmt: skip
        with server.http() as client:
            created = client.post("/v1/models", json={"owner": "admin", "name": "empty",
                                                      "visibility": "public", "hardware": "cpu"})  # fmt: skip
            assert created.status_code == 201, created.text
        yield server


@pytest.fixture(scope="module")
def replicate_spec(live: LiveServer) -> OpenApiSchema:
    schema = schemathesis.openapi.from_path(SPEC, config=config())
    schema.config.update(
        base_url=f"{live.url}/v1",
        headers={"Authorization": f"Bearer {live.token}"},
        tls_verify=str(live.tls.ca_file),
        request_timeout=90,
    )
    return schema


schema = schemathesis.pytest.from_fixture("replicate_spec")


@schema.parametrize()
@pytest.mark.filterwarnings("ignore")
def test_replicate_spec(case: schemathesis.Case) -> None:
    case.call_and_validate()
