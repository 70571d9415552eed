"""Bearer (or `Token`) authentication, and who may see what.

A browser signed in to the web pages may call the API with its session cookie instead of a
token. A request that changes something must then also carry `X-Requested-With` (which a
cross-site form cannot send), so another site cannot act in the user's name.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, Request

from modelyard.store.accounts import authenticate
from modelyard.store.models import can_see
from modelyard.store.sessions import SESSION_COOKIE, session_account
from modelyard.store.tables import Account, Model

from .errors import Problem
from .platform import Platform

# `can_see` lives in the store (the web pages use it too); routes import it from here.
__all__ = ["AccountDep", "can_edit", "can_see", "current_account", "signed_in_by_cookie"]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_HEADER = "x-requested-with"
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
    platform: Platform = request.app.state.platform
    if token is None:
        return _cookie_account(platform, request)
    account = platform.tokens.get(token)
    if account is None:
        with platform.db.session() as session:
            account = authenticate(session, token)
        if account is None:
            raise UNAUTHENTICATED
        platform.tokens.put(token, account)
    return account


def _cookie_account(platform: Platform, request: Request) -> Account:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise UNAUTHENTICATED
    if request.method not in SAFE_METHODS and not request.headers.get(CSRF_HEADER):
        raise Problem(403, f"A request signed in by a cookie needs the {CSRF_HEADER} header.")
    with platform.db.session() as session:
        account = session_account(session, cookie)
    if account is None:
        raise UNAUTHENTICATED
    request.state.signed_in_by_cookie = True
    return account


def signed_in_by_cookie(request: Request) -> bool:
    """Whether the web pages made this request (its predictions' `source` is then `web`)."""
    return bool(getattr(request.state, "signed_in_by_cookie", False))


async def current_account(request: Request) -> Account:
    """The dependency: a cached token costs no thread hop; a lookup runs off the event loop."""
    token = token_from(request)
    if token is not None:
        platform: Platform = request.app.state.platform
        account = platform.tokens.get(token)
        if account is not None:
            return account
    return await asyncio.to_thread(authenticate_request, request)


AccountDep = Annotated[Account, Depends(current_account)]


def can_edit(model: Model, account: Account) -> bool:
    return model.owner_id == account.id or account.is_admin
