"""Bearer (or `Token`) authentication, and who may see what."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from modelyard.store.accounts import authenticate
from modelyard.store.tables import Account, Model

from .errors import Problem
from .platform import Platform

UNAUTHENTICATED = Problem(
    401,
    "You did not pass a valid authentication token",
    title="Unauthenticated",
    headers={"WWW-Authenticate": "Bearer"},
)


def token_from(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    return None


def authenticate_request(request: Request) -> Account:
    """The caller's account; 401 problem+json without a valid token."""
    token = token_from(request)
    if token is None:
        raise UNAUTHENTICATED
    platform: Platform = request.app.state.platform
    account = platform.tokens.get(token)
    if account is None:
        with platform.db.session() as session:
            account = authenticate(session, token)
        if account is None:
            raise UNAUTHENTICATED
        platform.tokens.put(token, account)
    return account


async def current_account(request: Request) -> Account:
    """The dependency; `async` so FastAPI does not hop to a thread for it."""
    return authenticate_request(request)


AccountDep = Annotated[Account, Depends(current_account)]


def can_see(model: Model, account: Account | None) -> bool:
    return model.visibility == "public" or (account is not None and model.owner_id == account.id)


def can_edit(model: Model, account: Account) -> bool:
    return model.owner_id == account.id or account.is_admin
