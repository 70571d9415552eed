"""Collections of models (made by the platform, read through the API) and `GET /search`, which
spans models and collections."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from modelyard.store.catalog import (
    collection_models,
    get_collection,
    list_collections,
    search_collections,
    search_models,
)
from modelyard.store.tables import Collection

from ..auth import AccountDep
from ..errors import Problem, not_found
from ..limits import QUERY_MAX, parse_count
from ..pages import decode_cursor, page
from ..platform import PlatformDep
from .models import render_models

router = APIRouter(tags=["collections"])
PAGE_SIZE = 100
SEARCH_DEFAULT, SEARCH_MAX = 20, 50  # `limit` of GET /search, as Replicate's
COLLECTIONS_IN_SEARCH = 10


def collection_item(collection: Collection) -> dict[str, Any]:
    # Python client 1.0.7 requires a string description, so never null.
    return {
        "name": collection.name,
        "slug": collection.slug,
        "description": collection.description or "",
    }


@router.get("/collections")
def list_(platform: PlatformDep, _: AccountDep, cursor: str | None = None) -> JSONResponse:
    after = decode_cursor(cursor)
    with platform.db.session() as session:
        rows = list_collections(session, after=after, limit=PAGE_SIZE + 1)
    body = page(
        rows,
        PAGE_SIZE,
        platform.urls.api("/collections"),
        {},
        key=lambda c: (c.created_at, c.slug),
        render=collection_item,
    )
    return JSONResponse(body)


@router.get("/collections/{slug}")
def get(slug: str, platform: PlatformDep, account: AccountDep) -> JSONResponse:
    """With `full_description` and the models the caller may see."""
    with platform.db.session() as session:
        collection = get_collection(session, slug)
        if collection is None:
            raise not_found("The requested collection does not exist.")
        rows = collection_models(session, slug, account.id)
        models = render_models(session, rows, platform.urls)
    return JSONResponse(
        {
            **collection_item(collection),
            "full_description": collection.full_description,
            "models": models,
        }
    )


@router.get("/search")
def search(
    platform: PlatformDep, account: AccountDep, query: str | None = None, limit: str | None = None
) -> JSONResponse:
    """Models (with search metadata) and collections matching `query`; no documentation pages."""
    if query is None or not query.strip():
        raise Problem(400, 'Query parameter "query" is required', title="Bad request")
    if len(query) > QUERY_MAX:
        raise Problem(400, f"query is longer than {QUERY_MAX} characters.", title="Bad request")
    count = _limit(limit)
    with platform.db.session() as session:
        found = search_models(session, account.id, query, count)
        rendered = render_models(session, [row for row, _ in found], platform.urls)
        collections = [
            {
                **collection_item(c),
                "models": [row.ref for row in collection_models(session, c.slug, account.id)],
            }
            for c in search_collections(session, query, COLLECTIONS_IN_SEARCH)
        ]
    models = [
        {"model": model, "metadata": {"generated_description": None, "tags": [], "score": score}}
        for model, (_, score) in zip(rendered, found, strict=True)
    ]
    return JSONResponse({"query": query, "models": models, "collections": collections, "pages": []})


def _limit(value: str | None) -> int:
    if value is None:
        return SEARCH_DEFAULT
    count = parse_count(value.strip(), 2)
    if count is None or not 1 <= count <= SEARCH_MAX:
        raise Problem(
            400,
            f"limit must be an integer from 1 to {SEARCH_MAX}; got {value[:20]!r}.",
            title="Bad request",
        )
    return count
