"""The usage API and spend limits in process (as tests/api/test_inprocess.py): `GET
/v1/account/usage` sums the metering ledger by day, model, SKU and phase (JSON and CSV, an
admin for any account or all), `PATCH /v1/account` sets the monthly limit, and a create past it
answers 402 storing nothing. The ledger's rows are inserted directly (the engine writes them in
service). The queries and the limit's check run on PostgreSQL too.
"""

from __future__ import annotations

import asyncio
import csv
import io
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from support.postgres import fresh_database

from modelyard.billing.limits import refusal, today
from modelyard.platform import build_app
from modelyard.settings import Settings
from modelyard.store.accounts import create_account, ensure_admin, issue_token
from modelyard.store.database import Database
from modelyard.store.models import create_model
from modelyard.store.tables import Account, Deployment, Prediction, Usage
from modelyard.store.usage_report import usage_rows, usd, usd_to_nanos

ASYNC = pytest.mark.asyncio(loop_scope="session")

PACKAGE = Path(__file__).parents[1] / "e2e" / "packages" / "slow"
DAY1, DAY2 = date(2026, 11, 3), date(2026, 11, 4)


class HeldBackend:
    """Instances that never finish booting: a create is stored and queued, and runs nothing."""

    async def close(self) -> None:
        pass

    def instance(self, spec: object) -> object:
        return _Held()


class _Held:
    lost = False

    async def start(self, progress: object) -> int:
        await asyncio.Event().wait()
        return 1

    async def stop(self) -> None:
        pass

    async def cancel(self, prediction_id: str) -> bool:
        return False


def add_usage(
    session: Session, account_id: int, model_id: int | None, day: date, key: str, *,
    phase: str = "active", hardware: str = "cpu", seconds: float = 10.0, cost: int = 1_000,
    billed: bool = True, unit: str = "second", quantity: float | None = None,
) -> None:  # fmt: skip
    session.add(
        Usage(
            key=key, account_id=account_id, prediction_id=None, model_id=model_id,
            deployment_id=None, hardware=hardware, phase=phase, seconds=seconds,
            quantity=seconds if quantity is None else quantity, unit=unit,
            unit_price_nanos=cost, cost_nanos=cost if billed else 0, billed=billed, day=day,
        )
    )  # fmt: skip


def seed(session: Session) -> dict[str, int]:
    """admin/echo and bob/art with a ledger over two days; the account ids."""
    admin = session.scalar(select(Account).where(Account.username == "admin"))
    assert admin is not None
    bob = create_account(session, "bob")
    echo = create_model(session, admin, "echo").model
    art = create_model(session, bob, "art").model
    add_usage(session, admin.id, echo.id, DAY1, "a1", seconds=2.5, cost=287_500)
    add_usage(session, admin.id, echo.id, DAY1, "a2", seconds=1.5, cost=172_500)
    add_usage(session, admin.id, echo.id, DAY1, "a3", phase="setup", seconds=30, billed=False)
    add_usage(session, admin.id, echo.id, DAY2, "a4", hardware="gpu-t4", cost=2_250_000)
    add_usage(session, admin.id, None, DAY2, "a5", seconds=1)  # a model since deleted
    add_usage(session, bob.id, art.id, DAY2, "b1", phase="output", unit="image", quantity=4,
              seconds=0, cost=12_000_000)  # fmt: skip
    return {"admin": admin.id, "bob": bob.id}


class Api:
    def __init__(self, client: httpx.AsyncClient, app: Any, bob_token: str) -> None:
        self.client, self.platform, self.bob_token = client, app.state.platform, bob_token
        self.ids: dict[str, int] = {}

    def as_bob(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.bob_token}"}


@asynccontextmanager
async def serve(tmp_path: Path) -> AsyncIterator[Api]:
    settings = Settings(data_dir=tmp_path / "data", public_url="http://modelyard.test")
    app = build_app(settings, backend=HeldBackend(), web=False)  # type: ignore[arg-type]
    with app.state.platform.db.session() as session:
        issued = ensure_admin(session, "admin")
        assert issued is not None
        ids = seed(session)
        bob = session.get(Account, ids["bob"])
        assert bob is not None
        bob_token = issue_token(session, bob).token
    headers = {"Authorization": f"Bearer {issued.token}"}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=settings.public_url, headers=headers
        ) as client,
    ):
        api = Api(client, app, bob_token)
        api.ids = ids
        yield api


NOVEMBER = {"from": "2026-11-01", "to": "2026-11-30"}


@ASYNC
async def test_usage_by_day_model_hardware_and_phase(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        answer = await api.client.get("/v1/account/usage", params=NOVEMBER)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["account"] == "admin" and body["group_by"] == [
            "day",
            "model",
            "hardware",
            "phase",
        ]
        rows = {(r["day"], r["model"], r["hardware"], r["phase"]): r for r in body["results"]}
        active = rows[("2026-11-03", "admin/echo", "cpu", "active")]
        assert active == {
            "day": "2026-11-03", "model": "admin/echo", "hardware": "cpu", "phase": "active",
            "unit": "second", "billed": True, "seconds": 4.0, "quantity": 4.0,
            "cost_usd": "0.00046",
        }  # fmt: skip
        setup = rows[("2026-11-03", "admin/echo", "cpu", "setup")]
        assert setup["billed"] is False and setup["cost_usd"] == "0.00"
        assert rows[("2026-11-04", None, "cpu", "active")]["seconds"] == 1.0
        assert len(rows) == 4  # bob's rows are bob's
        assert body["totals"] == {
            "seconds": 45.0, "quantity": {"second": 45.0}, "cost_usd": "0.002711",
        }  # fmt: skip
        assert body["spend_limit"]["spend_limit_usd"] is None
        by_model = await api.client.get(
            "/v1/account/usage", params={**NOVEMBER, "group_by": "model"}
        )
        assert [(r["model"], r["cost_usd"]) for r in by_model.json()["results"]] == [
            ("admin/echo", "0.00271"), ("admin/echo", "0.00"), (None, "0.000001"),
        ]  # fmt: skip
        # The default range is this month: the ledger's November is not in it.
        this_month = (await api.client.get("/v1/account/usage")).json()
        assert this_month["from"] == today().replace(day=1).isoformat()
        assert this_month["results"] == [] or today().month == 11


@ASYNC
async def test_csv_by_parameter_or_accept_header(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        params = {**NOVEMBER, "group_by": "day,phase", "format": "csv"}
        answer = await api.client.get("/v1/account/usage", params=params)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/csv")
        assert "usage-admin-2026-11-01-2026-11-30.csv" in answer.headers["content-disposition"]
        lines = list(csv.reader(io.StringIO(answer.text)))
        assert lines[0] == ["day", "phase", "unit", "billed", "seconds", "quantity", "cost_usd"]
        assert ["2026-11-03", "setup", "second", "false", "30.0", "30.0", "0.00"] in lines
        accepted = await api.client.get(
            "/v1/account/usage", params={**NOVEMBER, "group_by": "day,phase"},
            headers={"Accept": "text/csv"},
        )  # fmt: skip
        assert accepted.text == answer.text


@ASYNC
async def test_admins_see_any_account_or_all_and_others_only_their_own(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        bobs = await api.client.get("/v1/account/usage", params={**NOVEMBER, "account": "bob"})
        [row] = bobs.json()["results"]
        assert row["model"] == "bob/art" and row["unit"] == "image" and row["quantity"] == 4.0
        assert row["cost_usd"] == "0.012"
        every = await api.client.get(
            "/v1/account/usage", params={**NOVEMBER, "account": "*", "group_by": "model"}
        )
        body = every.json()
        assert body["account"] is None and body["group_by"] == ["account", "model"]
        assert {r["account"] for r in body["results"]} == {"admin", "bob"}
        assert body["totals"]["quantity"] == {"image": 4.0, "second": 45.0}
        assert "spend_limit" not in body
        as_bob = await api.client.get(
            "/v1/account/usage", params={**NOVEMBER, "account": "admin"}, headers=api.as_bob()
        )
        assert as_bob.status_code == 403
        assert as_bob.headers["content-type"].startswith("application/problem+json")
        own = await api.client.get("/v1/account/usage", params=NOVEMBER, headers=api.as_bob())
        assert [r["model"] for r in own.json()["results"]] == ["bob/art"]
        nobody = await api.client.get("/v1/account/usage", params={"account": "nobody"})
        assert _invalid_field(nobody) == "account"


def _invalid_field(answer: httpx.Response) -> str:
    assert answer.status_code == 422, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    [problem] = answer.json()["invalid_fields"]
    return str(problem["field"])


@ASYNC
async def test_bad_parameters_are_named(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        cases = {
            "from": {"from": "2026-13-01"},
            "to": {"to": "yesterday"},
            "group_by": {"group_by": "day,colour"},
            "format": {"format": "xml"},
        }
        for field, params in cases.items():
            answer = await api.client.get("/v1/account/usage", params=params)
            assert _invalid_field(answer) == field
        backwards = {"from": "2026-11-02", "to": "2026-11-01"}
        assert _invalid_field(await api.client.get("/v1/account/usage", params=backwards)) == "from"
        start = date(2025, 1, 1)
        year = {"from": start.isoformat(), "to": (start + timedelta(days=365)).isoformat()}
        assert (await api.client.get("/v1/account/usage", params=year)).status_code == 200
        longer = {**year, "to": (start + timedelta(days=366)).isoformat()}
        too_long = await api.client.get("/v1/account/usage", params=longer)
        assert _invalid_field(too_long) == "to"
        assert "366 days" in too_long.json()["detail"]
        unsigned = await api.client.get("/v1/account/usage", headers={"Authorization": ""})
        assert unsigned.status_code == 401


@ASYNC
async def test_setting_the_spend_limit(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        answer = await api.client.patch("/v1/account", json={"spend_limit_usd": "12.50"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["username"] == "admin" and body["spend_limit_usd"] == "12.50"
        assert body["reached"] is False and body["month"] == today().strftime("%Y-%m")
        number = await api.client.patch("/v1/account", json={"spend_limit_usd": 0.1})
        assert number.json()["spend_limit_usd"] == "0.10"
        with api.platform.db.session() as session:
            assert session.get(Account, api.ids["admin"]).spend_limit_nanos == 100_000_000
        cleared = await api.client.patch("/v1/account", json={"spend_limit_usd": None})
        assert cleared.json()["spend_limit_usd"] is None
        for bad in (-1, "abc", True, "NaN", "1e12", "0.0000000001", [1]):
            answer = await api.client.patch("/v1/account", json={"spend_limit_usd": bad})
            assert _invalid_field(answer) == "spend_limit_usd", bad
        assert _invalid_field(await api.client.patch("/v1/account", json={"name": "x"})) == "name"
        assert _invalid_field(await api.client.patch("/v1/account", json={})) == "spend_limit_usd"
        # An admin sets another account's; that account cannot set the admin's.
        bobs = await api.client.patch(
            "/v1/account", params={"account": "bob"}, json={"spend_limit_usd": 3}
        )
        assert bobs.json()["username"] == "bob" and bobs.json()["spend_limit_usd"] == "3.00"
        refused = await api.client.patch(
            "/v1/account", params={"account": "admin"}, json={"spend_limit_usd": 1},
            headers=api.as_bob(),
        )  # fmt: skip
        assert refused.status_code == 403


@ASYNC
async def test_a_create_past_the_limit_is_402_and_stores_nothing(tmp_path: Path) -> None:
    async with serve(tmp_path) as api:
        with api.platform.db.session() as session:  # this month's spend: $0.02
            add_usage(session, api.ids["admin"], None, today(), "now", cost=20_000_000)
        await _push(api, tmp_path)
        body = {"version": "admin/slow", "input": {"tag": "t"}}
        limit = await api.client.patch("/v1/account", json={"spend_limit_usd": "0.03"})
        assert limit.json()["reached"] is False
        below = await api.client.post("/v1/predictions", json=body)
        assert below.status_code == 201, below.text
        await api.client.patch("/v1/account", json={"spend_limit_usd": "0.02"})
        for _ in range(2):
            answer = await api.client.post("/v1/predictions", json=body)
            assert answer.status_code == 402, answer.text
            assert answer.headers["content-type"].startswith("application/problem+json")
            assert answer.headers["x-should-retry"] == "false"
            problem = answer.json()
            assert problem["title"] == "Spend limit reached"
            assert problem["spend_limit_usd"] == "0.02" and problem["month_spend_usd"] == "0.02"
            assert "$0.02" in problem["detail"] and problem["reached"] is True
        with api.platform.db.session() as session:
            assert session.scalar(select(func.count()).select_from(Prediction)) == 1
            admin = session.get(Account, api.ids["admin"])
            assert admin.spend_notified_month == today().strftime("%Y-%m")
        # Another account is not held back by this one's limit.
        assert (await api.client.get("/v1/account/usage", headers=api.as_bob())).status_code == 200


async def _push(api: Api, tmp_path: Path) -> None:
    created = await api.client.post(
        "/v1/models", json={"owner": "admin", "name": "slow", "visibility": "private",
                            "hardware": "cpu"},
    )  # fmt: skip
    assert created.status_code == 201, created.text
    archive = shutil.make_archive(str(tmp_path / "slow-archive"), "gztar", PACKAGE)
    pushed = await api.client.post(
        "/v1/models/admin/slow/versions",
        content=Path(archive).read_bytes(),
        headers={"Content-Type": "application/gzip"},
    )
    assert pushed.status_code in (200, 201), pushed.text


def test_money_is_exact() -> None:
    assert usd(0) == "0.00" and usd(1) == "0.000000001" and usd(1_500_000_000) == "1.50"
    assert usd_to_nanos("0.000000001") == 1 and usd_to_nanos(12) == 12_000_000_000
    assert usd_to_nanos(0.1) == 100_000_000  # the float's shortest text, not its binary value


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.fixture
def pg() -> Iterator[Database]:
    with fresh_database("usage") as url:
        database = Database(url)
        database.migrate()
        try:
            yield database
        finally:
            database.dispose()


def test_the_queries_and_the_check_on_postgresql(pg: Database) -> None:
    with pg.session() as session:
        create_account(session, "admin", is_admin=True)
        ids = seed(session)
    with pg.session() as session:
        rows = usage_rows(session, [ids["admin"]], DAY1, DAY2, ["day", "model", "phase"])
        assert [(r.day, r.model, r.phase, r.cost_nanos) for r in rows] == [
            (DAY1, "admin/echo", "active", 460_000), (DAY1, "admin/echo", "setup", 0),
            (DAY2, "admin/echo", "active", 2_250_000), (DAY2, None, "active", 1_000),
        ]  # fmt: skip
        every = usage_rows(session, None, DAY1, DAY2, ["account"])
        assert {(r.account, r.unit, r.billed): r.cost_nanos for r in every} == {
            ("admin", "second", True): 2_711_000, ("admin", "second", False): 0,
            ("bob", "image", True): 12_000_000,
        }  # fmt: skip
        session.get(Account, ids["bob"]).spend_limit_nanos = 12_000_000  # type: ignore[union-attr]
    # Replicas checking at once: every check refuses, and the month is recorded by one of them.
    results: list[object] = []

    def check() -> None:
        with pg.engine.begin() as connection:
            results.append(refusal(connection, ids["bob"], DAY2))

    threads = [threading.Thread(target=check) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 8 and all(r is not None and r.reached for r in results)  # type: ignore[attr-defined]
    with pg.session() as session:
        assert session.get(Account, ids["bob"]).spend_notified_month == "2026-11"  # type: ignore[union-attr]
        assert session.get(Account, ids["admin"]).spend_notified_month is None  # type: ignore[union-attr]
    # A deployment's predictions are checked against its owner's limit (its owner pays).
    with pg.session() as session:
        deployment = Deployment(owner_id=ids["bob"], name="d")
        session.add(deployment)
        session.flush()
        deployment_id = deployment.id
    with pg.engine.begin() as connection:
        assert refusal(connection, ids["admin"], DAY2) is None
        by_owner = refusal(connection, ids["admin"], DAY2, deployment_id=deployment_id)
        assert by_owner is not None and by_owner.spent_nanos == 12_000_000
