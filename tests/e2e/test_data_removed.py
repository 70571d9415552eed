"""Data retention through a live server (`serve --data-retention 3600`): a prediction made with the
official client runs for real, then the retention sweep (engine/retention.py) runs against the
server's database with its clock set an hour past the prediction's own `completed_at`. The API
(the client's get and list), the output file's URL and the web page then show what Replicate
shows after removal; a web-made prediction stays (no `--web-data-retention`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from live import PACKAGES, LiveServer, Tls, serving
from predicting import wait_for
from sqlalchemy import update

from modelyard.engine.retention import remove_expired_data
from modelyard.settings import Settings
from modelyard.store.blobs import BlobStore
from modelyard.store.database import Database, sqlite_url
from modelyard.store.tables import Prediction

PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAj"
    "CB0C8AAAAASUVORK5CYII="
)
PASSWORD = "retention password"
HOUR = 3600.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tls: Tls) -> Iterator[LiveServer]:
    with serving(tmp_path_factory, tls, "retention", "--data-retention", "3600") as live:
        live.cli("password", "admin", "--password", PASSWORD)
        yield live


@pytest.fixture(scope="module")
def mirror(server: LiveServer) -> str:
    """packages/mirror: logs a line and returns the image it was given as a file output."""
    return server.push(PACKAGES / "mirror", "admin/mirror")


def _run(server: LiveServer, version: str) -> dict[str, Any]:
    client = server.replicate()
    prediction = client.predictions.create(version=version, input={"image": PNG})
    with server.http() as http:
        return wait_for(http, prediction.id, {"succeeded", "failed", "canceled"})


def _sweep(server: LiveServer, body: dict[str, Any]) -> list[str]:
    """The engine's retention sweep on the server's own database and blobs, an hour after the
    prediction finished by its own timestamp."""
    finished = datetime.fromisoformat(body["completed_at"])
    settings = Settings(data_dir=server.data_dir, data_retention=HOUR)
    db = Database(sqlite_url(server.data_dir / "modelyard.db"))
    try:
        return remove_expired_data(
            settings, db, BlobStore(settings.blob_dir), finished + timedelta(seconds=HOUR)
        )
    finally:
        db.dispose()


def _mark_web(server: LiveServer, prediction_id: str) -> None:
    """As if it was made on the web pages (setting up a web form run is another test's job)."""
    db = Database(sqlite_url(server.data_dir / "modelyard.db"))
    try:
        with db.session() as session:
            session.execute(
                update(Prediction).where(Prediction.id == prediction_id).values(source="web")
            )
    finally:
        db.dispose()


def test_removed_predictions_show_what_replicate_shows(server: LiveServer, mirror: str) -> None:
    web = _run(server, mirror)
    _mark_web(server, web["id"])
    body = _run(server, mirror)
    assert body["status"] == "succeeded", body
    assert body["data_removed"] is False and "copied" in body["logs"]
    output_url = body["output"]
    verify = server.tls.context()
    assert httpx.get(output_url, verify=verify).status_code == 200

    removed = _sweep(server, body)
    assert body["id"] in removed and web["id"] not in removed

    client = server.replicate()
    after = client.predictions.get(body["id"])  # its model has no `data_removed` field
    assert (after.input, after.output, after.logs) == ({}, None, "")
    assert after.status == "succeeded" and after.metrics["predict_time"] >= 0
    assert (after.created_at, after.completed_at) == (body["created_at"], body["completed_at"])
    with server.http() as http:
        raw = http.get(f"/v1/predictions/{body['id']}").json()
        assert raw["data_removed"] is True
        assert "output" in raw and raw["output"] is None  # the key stays, as on Replicate
        assert raw["urls"]["get"] == body["urls"]["get"]
        listed = {p["id"]: p for p in http.get("/v1/predictions").json()["results"]}
        assert listed[body["id"]]["data_removed"] is True
        assert listed[web["id"]]["data_removed"] is False
        kept = http.get(f"/v1/predictions/{web['id']}").json()
        assert kept["output"] == web["output"] and kept["input"] == {"image": PNG}
    assert httpx.get(output_url, verify=verify).status_code == 404  # the file went too

    with httpx.Client(base_url=server.url, verify=verify, timeout=60) as page:
        signin = {"username": "admin", "password": PASSWORD, "next": "/"}
        assert page.post("/signin", data=signin).status_code == 303
        html = page.get(f"/p/{body['id']}").text
        assert 'id="data-removed"' in html and "removed 1 hour after it finished" in html
        assert 'id="data-removed"' not in page.get(f"/p/{web['id']}").text
