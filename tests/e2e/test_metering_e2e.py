"""The metering ledger on a live server with real workers: each prediction's `cost` field, its
ledger rows (read from the server's own SQLite file), the public/private rule, per-output
pricing set through `PATCH /v1/models/{owner}/{name}`, and exactly-once across a restart.

Figures are checked against what the prediction itself recorded (`metrics.predict_time`) and
the ledger's own seconds, never against how long anything took.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from contract_support import Contract
from live import PACKAGES, LiveServer, Tls, fixture_package, serving
from predicting import wait_for
from sqlalchemy import create_engine, text

from modelyard.billing.pricing import cost_nanos, usd

CPU_NANOS = 100_000  # cpu: $0.000100 per second
ENDED = {"succeeded", "failed", "canceled"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    with serving(tmp_path_factory, tls, "metering") as live:
        yield live


def ledger(server: LiveServer, prediction_id: str) -> list[dict[str, Any]]:
    engine = create_engine(f"sqlite:///{server.data_dir / 'modelyard.db'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT * FROM usage WHERE prediction_id = :p ORDER BY id"),
                {"p": prediction_id},
            )
            return [dict(row._mapping) for row in rows]
    finally:
        engine.dispose()


def push(server: LiveServer, package: Any, name: str, visibility: str) -> str:
    """The package as admin/`name`; returns the model's ref (the same package pushed to two
    models is one version id: predictions name the model, so each runs on its own pool)."""
    server.push(package, f"admin/{name}")
    with server.http() as api:
        response = api.patch(f"/v1/models/admin/{name}", json={"visibility": visibility})
        assert response.status_code == 200, response.text
    return f"admin/{name}"


def run(server: LiveServer, ref: str, **inputs: Any) -> dict[str, Any]:
    with server.http() as api:
        response = api.post(f"/v1/models/{ref}/predictions", json={"input": inputs})
        assert response.status_code == 201, response.text
        done = wait_for(api, response.json()["id"], ENDED)
    assert done["status"] == "succeeded", done
    return done


def test_a_private_model_bills_its_setup_and_active_time(server: LiveServer) -> None:
    ref = push(server, PACKAGES / "noop", "private-noop", "private")
    first = run(server, ref)
    setup, active = ledger(server, first["id"])
    assert (setup["phase"], setup["billed"], setup["hardware"]) == ("setup", 1, "cpu")
    assert setup["seconds"] > 0 and setup["cost_nanos"] == cost_nanos(setup["seconds"], CPU_NANOS)
    predict_time = first["metrics"]["predict_time"]
    assert (active["phase"], active["seconds"]) == ("active", predict_time)
    assert active["cost_nanos"] == cost_nanos(predict_time, CPU_NANOS)
    total = setup["cost_nanos"] + active["cost_nanos"]
    assert first["cost"] == {"usd": usd(total), "nanos": total}
    # The next one runs on the instance already up: active time only.
    second = run(server, ref)
    [row] = ledger(server, second["id"])
    assert row["phase"] == "active" and row["seconds"] == second["metrics"]["predict_time"]
    assert second["cost"]["nanos"] == row["cost_nanos"]


def test_a_public_model_bills_active_time_only(server: LiveServer) -> None:
    ref = push(server, PACKAGES / "noop", "public-noop", "public")
    done = run(server, ref)
    setup, active = ledger(server, done["id"])
    assert (setup["phase"], setup["billed"], setup["cost_nanos"]) == ("setup", 0, 0)
    assert done["cost"]["nanos"] == active["cost_nanos"]
    assert active["cost_nanos"] == cost_nanos(done["metrics"]["predict_time"], CPU_NANOS)


def test_a_model_priced_per_output_bills_its_metric(server: LiveServer) -> None:
    """tests/fixtures/metrics records `token_count` (one per token): priced per token."""
    ref = push(server, fixture_package("metrics"), "tokens", "public")
    pricing = {"unit": "token", "metric": "token_count", "price_nanos": 20_000}
    with server.http() as api:
        response = api.patch("/v1/models/admin/tokens", json={"pricing": pricing})
        assert response.status_code == 200, response.text
        assert response.json()["pricing"] == pricing
    done = run(server, ref, tokens=5)
    rows = ledger(server, done["id"])
    [output] = [r for r in rows if r["phase"] == "output"]
    assert (output["quantity"], output["unit"], output["cost_nanos"]) == (5.0, "token", 100_000)
    assert output["seconds"] == done["metrics"]["predict_time"]
    assert done["cost"] == {"usd": "0.000100000", "nanos": 100_000}  # its setup is not billed


def test_bad_pricing_is_a_problem(server: LiveServer) -> None:
    push(server, PACKAGES / "noop", "priced", "public")
    contract = Contract.load()
    with server.http() as api:
        for pricing, says in [
            ({"unit": "image"}, "price_nanos"),
            ({"unit": "image", "price_nanos": -5}, "price_nanos"),
            ({"unit": "image", "price_nanos": 1, "currency": "eur"}, "currency"),
            ("cheap", "pricing"),
        ]:
            response = api.patch("/v1/models/admin/priced", json={"pricing": pricing})
            assert response.status_code == 422, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert says in response.json()["detail"]
            contract.check("PATCH", "/v1/models/admin/priced", 422, response.json(),
                           response.headers["content-type"])  # fmt: skip
        cleared = api.patch("/v1/models/admin/priced", json={"pricing": None})
        assert cleared.status_code == 200 and "pricing" not in cleared.json()


def test_a_restart_meters_nothing_twice(server: LiveServer) -> None:
    ref = push(server, PACKAGES / "noop", "restarted", "private")
    done = run(server, ref)
    before = ledger(server, done["id"])
    server.restart()  # SIGKILL, then a new process on the same data
    with server.http() as api:
        again = api.get(f"/v1/predictions/{done['id']}").json()
    assert ledger(server, done["id"]) == before
    assert again["cost"] == done["cost"]


def test_a_deployment_bills_setup_even_for_a_public_model(server: LiveServer) -> None:
    version = server.push(PACKAGES / "noop", "admin/deployed")
    with server.http() as api:
        assert api.patch("/v1/models/admin/deployed", json={"visibility": "public"}).is_success
        body = {"name": "metered", "model": "admin/deployed", "version": version,
                "hardware": "cpu", "min_instances": 0, "max_instances": 1}  # fmt: skip
        made = api.post("/v1/deployments", json=body)
        assert made.status_code == 200, made.text
        created = api.post("/v1/deployments/admin/metered/predictions", json={"input": {}})
        assert created.status_code == 201, created.text
        done = wait_for(api, created.json()["id"], ENDED)
    assert done["status"] == "succeeded", done
    setup, active = ledger(server, done["id"])
    assert (setup["phase"], setup["billed"]) == ("setup", 1)
    assert setup["cost_nanos"] == cost_nanos(setup["seconds"], CPU_NANOS) > 0
    assert setup["deployment_id"] == active["deployment_id"] is not None
    assert active["seconds"] == done["metrics"]["predict_time"]
    assert done["cost"]["nanos"] == setup["cost_nanos"] + active["cost_nanos"]
