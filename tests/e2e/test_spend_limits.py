"""Spend limits and the Usage page against a live server: below its monthly limit an account's
predictions, deployment predictions and trainings run; once the month's billed spend reaches
it, concurrent creates of all three (from threads) are each refused with 402 problem+json and
nothing is stored, a prediction already running finishes, and the owner is told once (a log
line, and a notice on the pages). The month's spend is set by a ledger row written straight
into the server's database (the ledger is what the engine writes; its own tests check it).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from live import PACKAGES, LiveServer
from predicting import eventually, wait_for
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from modelyard.billing.limits import today
from modelyard.store.database import Database, sqlite_url
from modelyard.store.tables import Account, Model, Prediction, Usage

PASSWORD = "spend password"
DONE = {"succeeded", "failed", "canceled"}
CREATES = 24  # concurrent refused creates, a third of each kind


@contextmanager
def store(server: LiveServer) -> Iterator[Session]:
    """The server's own database (SQLite in WAL mode: the server keeps running)."""
    db = Database(sqlite_url(server.data_dir / "modelyard.db"))
    try:
        with db.session() as session:
            yield session
    finally:
        db.dispose()


def spend(
    server: LiveServer, key: str, nanos: int, model: str = "noop", hardware: str = "cpu"
) -> None:
    """A billed ledger row for admin, today, on admin/`model`."""
    with store(server) as session:
        admin = session.scalar(select(Account).where(Account.username == "admin"))
        found = session.scalar(select(Model).where(Model.name == model))
        assert admin is not None and found is not None
        session.add(
            Usage(key=key, account_id=admin.id, prediction_id=None, model_id=found.id,
                  deployment_id=None, hardware=hardware, phase="active", seconds=10.0,
                  quantity=10.0, unit="second", unit_price_nanos=nanos // 10, cost_nanos=nanos,
                  billed=True, day=today())
        )  # fmt: skip


def stored(server: LiveServer) -> int:
    with store(server) as session:
        return int(session.scalar(select(func.count()).select_from(Prediction)) or 0)


@pytest.fixture(scope="module")
def models(server: LiveServer) -> dict[str, str]:
    """admin/noop, admin/slow, admin/trainer (+ admin/trained), and a deployment admin/spender."""
    versions = {name: server.push(PACKAGES / name, f"admin/{name}") for name in
                ("noop", "slow", "trainer")}  # fmt: skip
    server.cli("password", "admin", "--password", PASSWORD)
    with server.http() as http:
        made = http.post("/v1/models", json={"owner": "admin", "name": "trained",
                                             "visibility": "private", "hardware": "cpu"})  # fmt: skip
        assert made.status_code == 201, made.text
        deployment = {"name": "spender", "model": "admin/noop", "version": versions["noop"],
                      "hardware": "cpu", "min_instances": 0, "max_instances": 1}  # fmt: skip
        made = http.post("/v1/deployments", json=deployment)
        assert made.status_code in (200, 201), made.text
    return versions


def creates(versions: dict[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """One create of each kind: a prediction, a deployment's prediction, a training."""
    return [
        ("/v1/predictions", {"version": versions["noop"], "input": {}}),
        ("/v1/deployments/admin/spender/predictions", {"input": {}}),
        (
            f"/v1/models/admin/trainer/versions/{versions['trainer']}/trainings",
            {"destination": "admin/trained", "input": {"word": "hi", "times": 1}},
        ),
    ]


def finished(http: httpx.Client, url: str) -> dict[str, Any]:
    """GET a prediction or training (its `urls.get`) until it ends."""
    return eventually(  # type: ignore[no-any-return]
        lambda: (now := http.get(url).json())["status"] in DONE and now, f"{url} to finish"
    )


def test_below_the_limit_everything_runs(server: LiveServer, models: dict[str, str]) -> None:
    with server.http() as http:
        assert http.patch("/v1/account", json={"spend_limit_usd": "1000"}).status_code == 200
        for path, body in creates(models):
            answer = http.post(path, json=body)
            assert answer.status_code == 201, answer.text
            done = finished(http, answer.json()["urls"]["get"])
            assert done["status"] == "succeeded", done


def test_past_the_limit_concurrent_creates_are_all_refused(
    server: LiveServer, models: dict[str, str], tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    with server.http() as http:
        assert http.patch("/v1/account", json={"spend_limit_usd": "1.00"}).status_code == 200
        running = http.post(
            "/v1/predictions",
            json={"version": models["slow"], "input": {"tag": "running", "gate": str(gate)}},
        )
        assert running.status_code == 201, running.text
        wait_for(http, running.json()["id"], {"processing"})
        spend(server, "spend-e2e-1", 1_000_000_000)  # $1.00 this month: the limit is reached
        before = stored(server)
        answers: list[httpx.Response] = []
        lock = threading.Lock()
        kinds = creates(models)

        def create(number: int) -> None:
            path, body = kinds[number % len(kinds)]
            with server.http() as client:
                answer = client.post(path, json=body)
            with lock:
                answers.append(answer)

        threads = [threading.Thread(target=create, args=(n,)) for n in range(CREATES)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert len(answers) == CREATES
        for answer in answers:
            assert answer.status_code == 402, answer.text
            assert answer.headers["content-type"].startswith("application/problem+json")
            problem = answer.json()
            assert problem["spend_limit_usd"] == "1.00" and problem["reached"] is True
            assert "$1.00" in problem["detail"] and problem["month"] == today().strftime("%Y-%m")
        assert stored(server) == before  # a 402 stores nothing
        gate.write_text("")  # the one already running finishes
        assert wait_for(http, running.json()["id"], DONE)["status"] == "succeeded"
        # Told once this month, however many were refused.
        assert server.logs().count("reached its monthly spend limit") == 1
        usage = http.get("/v1/account/usage", params={"group_by": ""}).json()
        assert usage["spend_limit"]["reached"] is True
        # Raising the limit lets creates through again.
        assert http.patch("/v1/account", json={"spend_limit_usd": "5"}).json()["reached"] is False
        again = http.post("/v1/predictions", json={"version": models["noop"], "input": {}})
        assert again.status_code == 201, again.text
        wait_for(http, again.json()["id"], DONE)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None, page
    return found.group(1)


def test_the_usage_page(server: LiveServer, models: dict[str, str]) -> None:
    # A SKU this machine has no instance of: the engine's own rows are never summed with it.
    spend(server, "spend-e2e-page", 250_000_000, model="slow", hardware="gpu-a100-large")
    with httpx.Client(base_url=server.url, verify=server.tls.context(), timeout=60) as browser:
        signed = browser.post("/signin", data={"username": "admin", "password": PASSWORD,
                                               "next": "/usage"})  # fmt: skip
        assert signed.status_code == 303
        with server.http() as http:
            http.patch("/v1/account", json={"spend_limit_usd": "0.25"})
        page = browser.get("/usage")
        assert page.status_code == 200, page.text
        html = page.text
        assert 'href="/usage"' in html  # the nav link
        assert '<svg id="usage-chart"' in html and "<rect " in html
        assert "<td>admin/slow</td>" in html  # the table by model
        assert today().isoformat() in html  # the table by day
        assert 'id="spend-notice"' in html and "limit of $0.25 is reached" in html
        assert 'id="spend-notice"' in browser.get("/explore").text  # on every page
        csv_link = re.search(r'id="usage-csv" href="([^"]+)"', html)
        assert csv_link is not None
        exported = browser.get(csv_link.group(1).replace("&amp;", "&"))
        assert exported.status_code == 200 and exported.headers["content-type"].startswith(
            "text/csv"
        )
        assert exported.text.startswith(
            "day,model,hardware,phase,unit,billed,seconds,quantity,cost_usd"
        )
        assert "admin/slow,gpu-a100-large,active,second,true,10.0,10.0,0.25" in exported.text
        # The admin picks another view: every account.
        every = browser.get("/usage", params={"account": "*"})
        assert every.status_code == 200 and "of every account" in every.text
        # The limit's form.
        changed = browser.post(
            "/usage/limit", data={"csrf": _csrf(html), "spend_limit_usd": "", "account": ""}
        )
        assert changed.status_code == 303
        after = browser.get("/usage").text
        assert 'id="spend-notice"' not in after and "no limit is set" in after
        bad = browser.post("/usage/limit", data={"csrf": _csrf(after), "spend_limit_usd": "-2"})
        assert bad.status_code == 400
    with server.http() as http:
        assert http.get("/v1/account/usage").json()["spend_limit"]["spend_limit_usd"] is None
    # Another account sees its own usage only; nobody signed in is sent to sign in.
    server.cli("token", "create", "--username", "carol")
    server.cli("password", "carol", "--password", PASSWORD)
    with httpx.Client(base_url=server.url, verify=server.tls.context(), timeout=60) as browser:
        assert browser.get("/usage").status_code == 303
        browser.post("/signin", data={"username": "carol", "password": PASSWORD, "next": "/"})
        own = browser.get("/usage")
        assert own.status_code == 200 and "admin/slow" not in own.text
        assert "<select" not in own.text  # no account picker
        assert browser.get("/usage", params={"account": "admin"}).status_code == 403
