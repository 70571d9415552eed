"""Signing in and out (web sessions), and the account's settings: API tokens and the webhook
signing secret (`/signin`, `/signout`, `/settings`)."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from modelyard.store.accounts import account_by_username, issue_token, list_tokens, revoke_token
from modelyard.store.sessions import (
    SESSION_COOKIE,
    SESSION_LIFETIME,
    check_password,
    end_session,
    start_session,
)
from modelyard.store.tables import Account

from .context import Viewer, error_page, refuse_form, render, services, sign_in_first, viewer

router = APIRouter()


def _safe_next(path: str) -> str:
    """Only a path on this site: `//evil.example` or a full URL would send the user away."""
    return path if path.startswith("/") and not path.startswith("//") else "/"


@router.get("/signin", response_class=HTMLResponse, include_in_schema=False)
def signin_form(request: Request, next: str = "/") -> HTMLResponse:
    return render(request, "signin.html", viewer(request), next=_safe_next(next), error="")


@router.post("/signin", include_in_schema=False)
def signin(
    request: Request, username: str = Form(""), password: str = Form(""), next: str = Form("/")
) -> Response:
    with services(request).db.session() as session:
        account = account_by_username(session, username.strip())
        if account is None or not check_password(account, password):
            who = viewer(request)
            error = "Wrong username or password." if username else "Enter your username."
            return render(request, "signin.html", who, 400, next=_safe_next(next), error=error)
        token = start_session(session, account)
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=services(request).settings.public_url.startswith("https:"),
    )
    return response


@router.post("/signout", include_in_schema=False)
def signout(request: Request, csrf: str = Form("")) -> Response:
    who = viewer(request)
    if who.session_token is None or not who.csrf_ok(csrf):  # another site cannot sign you out
        return RedirectResponse("/", status_code=303)
    with services(request).db.session() as session:
        end_session(session, who.session_token)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/settings", response_class=HTMLResponse, include_in_schema=False)
def settings_page(request: Request) -> Response:
    who = viewer(request)
    if who.account is None:
        return sign_in_first("/settings")
    return _settings(request, who, new_token="")


def _settings(request: Request, who: Viewer, new_token: str, status: int = 200) -> Response:
    assert who.account is not None
    with services(request).db.session() as session:
        tokens = [t for t in list_tokens(session, who.account) if t.revoked_at is None]
    return render(request, "settings.html", who, status, tokens=tokens,
                  new_token=new_token, secret=who.account.webhook_secret)  # fmt: skip


@router.post("/settings/tokens", include_in_schema=False)
def create_token(request: Request, csrf: str = Form(""), name: str = Form("")) -> Response:
    who = viewer(request)
    if (refused := refuse_form(request, who, csrf, "/settings")) is not None:
        return refused
    assert who.account is not None
    if len(name) > 200:
        return error_page(
            request, who, 400, "Name too long", "A token's name has at most 200 characters."
        )
    with services(request).db.session() as session:
        account = session.get(Account, who.account.id)
        assert account is not None
        issued = issue_token(session, account, name=name.strip() or "created on the web")
    return _settings(request, who, new_token=issued.token, status=201)


@router.post("/settings/tokens/{token_id}/revoke", include_in_schema=False)
def revoke(request: Request, token_id: int, csrf: str = Form("")) -> Response:
    who = viewer(request)
    if (refused := refuse_form(request, who, csrf, "/settings")) is not None:
        return refused
    assert who.account is not None
    with services(request).db.session() as session:
        if not revoke_token(session, who.account, token_id):
            return error_page(request, who, 404, "Token not found",
                              "It does not exist, or it was already revoked.")  # fmt: skip
    services(request).tokens.clear()
    return RedirectResponse("/settings", status_code=303)
