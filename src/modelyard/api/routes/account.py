"""The caller's account (and its monthly spend limit), its webhook signing secret, and the
hardware it may choose."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from modelyard.billing.hardware import Hardware
from modelyard.billing.limits import today
from modelyard.engine.hardware import placeable
from modelyard.store.tables import Account
from modelyard.store.usage_report import month_spend, usd_to_nanos

from ..auth import AccountDep
from ..errors import invalid_fields_problem
from ..platform import Platform, PlatformDep
from .usage import whose

router = APIRouter(tags=["account"])


@router.get("/account")
def get_account(account: AccountDep) -> JSONResponse:
    body: dict[str, Any] = {
        "type": account.type,
        "username": account.username,
        "name": account.name,
    }
    # The spec types these as URI strings, not nullable: leave them out rather than send null.
    if account.github_url:
        body["github_url"] = account.github_url
    if account.avatar_url:
        body["avatar_url"] = account.avatar_url
    return JSONResponse(body)


@router.patch("/account")
async def update_account(
    platform: PlatformDep,
    caller: AccountDep,
    account: str | None = None,
    body: dict[str, Any] = Body(...),  # noqa: B008 - FastAPI's way to take any JSON object
) -> JSONResponse:
    """Set (or, with null, remove) the monthly spend limit: `{"spend_limit_usd": "25.00"}`. An
    admin may set another account's with `?account=<username>`. Answers the account's limit and
    this month's spend."""
    problems = [
        {"type": "unknown", "field": key, "description": "is not a field this API can change"}
        for key in body
        if key != "spend_limit_usd"
    ]
    limit: int | None = None
    if "spend_limit_usd" not in body and not problems:
        problems.append(
            {"type": "required", "field": "spend_limit_usd", "description": "is required"}
        )
    elif "spend_limit_usd" in body:
        try:
            limit = usd_to_nanos(body["spend_limit_usd"])
        except ValueError as exc:
            problems.append(
                {"type": "invalid", "field": "spend_limit_usd", "description": str(exc)}
            )
    if problems:
        raise invalid_fields_problem(problems, "Invalid request")
    target = await asyncio.to_thread(whose, platform, caller, account)
    if target is None:
        raise invalid_fields_problem(
            [{"type": "invalid", "field": "account", "description": "must name one account"}],
            "Invalid request",
        )
    account_id = target.id

    def write(session: Session) -> dict[str, Any]:
        row = session.get(Account, account_id, with_for_update=True)
        assert row is not None
        row.spend_limit_nanos = limit
        session.flush()
        return {"username": row.username, **month_spend(session, row.id, limit, today()).as_json()}

    answer = await platform.writer.write_session(write)
    platform.tokens.clear()  # cached accounts carry the old limit
    return JSONResponse(answer)


@router.get("/webhooks/default/secret")
def webhook_secret(account: AccountDep) -> JSONResponse:
    return JSONResponse({"key": account.webhook_secret})


@router.get("/hardware")
def list_hardware(platform: PlatformDep, _: AccountDep) -> JSONResponse:
    """A bare JSON array, not a page: the clients iterate over the top level. Only the SKUs this
    installation can run now: listing one no machine offers would invite a model that never
    boots (the hardware table has more; docs/hardware.md)."""
    return JSONResponse([{"sku": entry.sku, "name": entry.name} for entry in available(platform)])


def available(platform: Platform) -> list[Hardware]:
    """The table's SKUs the backend can place, in the table's order."""
    return placeable(platform.hardware, platform.engine.backend)


def hardware_error(platform: Platform, sku: str) -> str | None:
    """Why a model or deployment cannot choose `sku`, or None when it can."""
    skus = [entry.sku for entry in available(platform)]
    if sku in skus:
        return None
    choose = f"must be one of {', '.join(skus)} (GET /v1/hardware lists them)"
    if sku in platform.hardware:
        return f"no machine of this installation can run {sku} now; {choose}"
    return choose
