"""An account's page (`/{owner}`): its models as cards, like replicate.com/{owner}: the public
ones for everyone, the private ones too for the owner (and an admin)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse

from modelyard.store.accounts import account_by_username, is_reserved
from modelyard.store.catalog import owner_models

from .context import error_page, render, services, viewer
from .explore import PAGE_SIZE, card

router = APIRouter()


@router.get("/{owner}", response_class=HTMLResponse, include_in_schema=False)
def owner_page(request: Request, owner: str) -> HTMLResponse:
    if is_reserved(owner):  # an unknown API or page path stays a plain 404
        raise HTTPException(404)
    who = viewer(request)
    with services(request).db.session() as session:
        account = account_by_username(session, owner)
        if account is None:
            return error_page(request, who, 404, "Account not found",
                              f"There is no account {owner}.")  # fmt: skip
        looking = who.account
        # The owner and an admin see the private models too; anyone else the public ones.
        sees_all = looking is not None and (looking.id == account.id or looking.is_admin)
        viewer_id = account.id if sees_all else (looking.id if looking else None)
        rows = owner_models(session, account.id, viewer_id, PAGE_SIZE)
        is_self = looking is not None and looking.id == account.id
        username = account.username
    return render(request, "owner.html", who, owner=username, is_self=is_self,
                  cards=[card(r) for r in rows])  # fmt: skip
