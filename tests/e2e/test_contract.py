"""Every operation of Replicate's OpenAPI spec, called on a live server, every response checked.

One pass over all 37 operations with a recording httpx client: success and error answers both go
through `Contract.check` (the spec's schemas plus the Python client's stricter rules), and the test
fails if any operation of the spec was not exercised.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
from contract_support import contract_and_recorder
from live import LiveServer, fixture_package

TRAINER = Path(__file__).parent / "packages" / "trainer"


def _wait(http: httpx.Client, url: str) -> dict[str, Any]:
    for _ in range(600):
        body = http.get(url).json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"{url} did not finish")


def test_every_operation_answers_in_the_spec_shape(server: LiveServer, hello: str) -> None:
    contract, recorder = contract_and_recorder()
    with recorder.attach(server.http()) as http:
        # account, hardware, webhook secret, collections
        http.get("/v1/account")
        http.get("/v1/hardware")
        http.get("/v1/webhooks/default/secret")
        http.get("/v1/collections")
        http.get("/v1/collections/no-such-collection")
        # models
        http.post(
            "/v1/models",
            json={
                "owner": "admin",
                "name": "contract",
                "visibility": "private",
                "hardware": "cpu",
                "description": "for the contract test",
            },
        )
        http.post("/v1/models", json={"owner": "admin"})  # 422: name missing
        http.get("/v1/models")
        http.get("/v1/models/admin/contract")
        http.get("/v1/models/admin/missing")
        http.request("QUERY", "/v1/models", content="hello", headers={"content-type": "text/plain"})
        http.get("/v1/search", params={"query": "hello"})
        http.get("/v1/search")  # 400/422: query missing
        http.patch("/v1/models/admin/contract", json={"description": "changed"})
        http.get("/v1/models/admin/contract/readme")
        http.get("/v1/models/admin/hello/examples")
        http.delete("/v1/models/admin/contract")
        # versions
        http.get("/v1/models/admin/hello/versions")
        http.get(f"/v1/models/admin/hello/versions/{hello}")
        http.get(f"/v1/models/admin/hello/versions/{'0' * 64}")
        spare = server.push(fixture_package("output_str"), "admin/spare")
        http.delete(f"/v1/models/admin/spare/versions/{spare}")
        # files
        uploaded = http.post("/v1/files", files={"content": ("a.txt", b"hello", "text/plain")})
        file_id = uploaded.json()["id"]
        http.get("/v1/files")
        http.get(f"/v1/files/{file_id}")
        http.get(f"/v1/files/{file_id}/download")
        http.delete(f"/v1/files/{file_id}")
        http.get(f"/v1/files/{file_id}")
        # predictions
        created = http.post(
            "/v1/predictions", json={"version": hello, "input": {"name": "Ada"}},
            headers={"Prefer": "wait=30"},
        )  # fmt: skip
        http.post("/v1/predictions", json={"version": hello, "input": {"repeat": 99}})  # 422
        http.post("/v1/predictions", json={"version": "0" * 64, "input": {}})  # 422
        http.post("/v1/models/admin/hello/predictions", json={"input": {"name": "Bo"}})
        prediction_id = created.json()["id"]
        http.get(f"/v1/predictions/{prediction_id}")
        http.get("/v1/predictions")
        http.post(f"/v1/predictions/{prediction_id}/cancel")
        http.get("/v1/predictions/nope")
        # trainings
        trainer = server.push(TRAINER if TRAINER.exists() else fixture_package("train_class"),
                              "admin/trainer")  # fmt: skip
        http.post("/v1/models", json={"owner": "admin", "name": "trained", "visibility": "private",
                                      "hardware": "cpu"})  # fmt: skip
        training = http.post(
            f"/v1/models/admin/trainer/versions/{trainer}/trainings",
            json={"destination": "admin/trained", "input": {}},
        )
        http.post(
            f"/v1/models/admin/trainer/versions/{trainer}/trainings",
            json={"destination": "admin/nowhere", "input": {}},
        )  # 404 with Replicate's wording
        training_id = training.json()["id"]
        _wait(http, f"/v1/trainings/{training_id}")
        http.get("/v1/trainings")
        http.post(f"/v1/trainings/{training_id}/cancel")
        # deployments
        http.post("/v1/deployments", json={"name": "dep", "model": "admin/hello", "version": hello,
                                           "hardware": "cpu", "min_instances": 0,
                                           "max_instances": 1})  # fmt: skip
        http.post("/v1/deployments", json={"name": "broken"})  # 422
        http.get("/v1/deployments")
        http.get("/v1/deployments/admin/dep")
        http.patch("/v1/deployments/admin/dep", json={"max_instances": 2})
        dep = http.post(
            "/v1/deployments/admin/dep/predictions", json={"input": {"name": "Cy"}},
            headers={"Prefer": "wait=30"},
        )  # fmt: skip
        assert dep.json()["deployment"] == "admin/dep"
        http.delete("/v1/deployments/admin/dep")
    covered = recorder.check_all(contract)
    missing = sorted({op.operation_id for op in contract.operations()} - covered)
    assert missing == [], f"operations not exercised: {missing}"
