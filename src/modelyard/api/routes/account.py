"""The caller's account, its webhook signing secret, and the hardware it may choose."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from modelyard.billing.hardware import Hardware
from modelyard.engine.hardware import placeable

from ..auth import AccountDep
from ..platform import Platform, PlatformDep

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
