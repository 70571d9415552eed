"""Explore: the catalog as cards, with search, collections and sorting (`/`, `/explore`)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from modelyard.store.catalog import (
    collection_models,
    list_collections,
    list_models,
    popular_models,
    search_models,
    sort_value,
)
from modelyard.store.models import ModelRow

from .context import render, services, viewer

router = APIRouter()
SORTS = {"popular": "Most runs", "recent": "Recently updated"}
PAGE_SIZE = 60


@dataclass(frozen=True)
class Card:
    ref: str
    description: str
    cover_image_url: str | None
    run_count: int
    visibility: str


def card(row: ModelRow) -> Card:
    model = row.model
    return Card(row.ref, model.description or "", model.cover_image_url, model.run_count,
                model.visibility)  # fmt: skip


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
@router.get("/explore", response_class=HTMLResponse, include_in_schema=False)
def explore(
    request: Request, q: str = "", collection: str = "", sort: str = "popular"
) -> HTMLResponse:
    who = viewer(request)
    viewer_id = who.account.id if who.account else None
    sort = sort if sort in SORTS else "popular"
    with services(request).db.session() as session:
        collections = list_collections(session, after=None, limit=50)
        if q.strip():  # best matches first, whatever the sort
            rows = [row for row, _ in search_models(session, viewer_id, q, PAGE_SIZE)]
        elif collection:
            rows = collection_models(session, collection, viewer_id)
            if sort == "popular":
                rows.sort(key=lambda row: (-row.model.run_count, row.ref))
            else:
                rows.sort(key=lambda row: sort_value(row.model, "latest_version_created_at"),
                          reverse=True)  # fmt: skip
        elif sort == "popular":
            rows = popular_models(session, viewer_id, PAGE_SIZE)
        else:
            rows = list_models(session, viewer_id, limit=PAGE_SIZE)
    return render(
        request, "explore.html", who, cards=[card(r) for r in rows], q=q, sort=sort,
        sorts=SORTS, collection=collection, collections=collections,
    )  # fmt: skip
