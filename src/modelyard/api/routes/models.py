"""Models: create, get, list (sorted, paginated), search (`QUERY`), update, delete, readme and
examples.

`model_json` lives here so the other routes that answer with models (collections, search) render
them the same way; it imports only `versions.version_json`, which imports nothing from here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal, cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from modelyard.billing.pricing import PricingError, parse_pricing
from modelyard.engine.instances import model_instances
from modelyard.engine.urls import Urls
from modelyard.engine.views import prediction_json, timestamp
from modelyard.store.accounts import account_by_username
from modelyard.store.catalog import (
    SORTS,
    SortBy,
    delete_model,
    has_versions,
    latest_versions,
    list_examples,
    list_models,
    predictions_by_id,
    search_models,
    sort_value,
)
from modelyard.store.models import ModelRow, create_model, get_model
from modelyard.store.tables import Account, Model, Prediction, Version

from ..auth import AccountDep, can_edit, can_see
from ..errors import Problem, invalid_fields_problem, not_found
from ..limits import (
    DESCRIPTION_MAX,
    QUERY_MAX,
    README_MAX,
    URL_MAX,
    is_unicode,
    parse_count,
    text_problem,
)
from ..pages import decode_cursor, page
from ..platform import Platform, PlatformDep
from ..refs import forget_versions
from .account import hardware_error
from .versions import version_json

router = APIRouter(tags=["models"])
PAGE_SIZE = 25  # models per page of `GET /models`
EXAMPLES_PAGE_SIZE = 100  # as predictions.list
SEARCH_LIMIT = 100  # `QUERY /models` answers one page: its `next` could not carry the query
NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
NAME_MAX = 100  # the column's width
URL_FIELDS = ("github_url", "paper_url", "license_url", "weights_url", "cover_image_url")
NO_MODEL = "The requested model does not exist."


# --- rendering ------------------------------------------------------------------------------


def model_json(
    row: ModelRow, urls: Urls, latest: Version | None, example: Prediction | None
) -> dict[str, Any]:
    """Replicate's Model (replicate-api.md §2.2): `latest_version` is a Version,
    `default_example` a full Prediction; both may be null."""
    model = row.model
    return {
        "url": urls.web_model(row.ref),
        "owner": row.owner,
        "name": model.name,
        "description": model.description,
        "visibility": model.visibility,
        "github_url": model.github_url,
        "paper_url": model.paper_url,
        "license_url": model.license_url,
        "weights_url": model.weights_url,
        "run_count": model.run_count,
        "cover_image_url": model.cover_image_url,
        "default_example": prediction_json(example, urls) if example is not None else None,
        "latest_version": version_json(latest) if latest is not None else None,
        "is_official": False,
        "created_at": timestamp(model.created_at),
        **({"pricing": model.pricing} if model.pricing else {}),  # an extension: docs/billing.md
    }


def render_models(session: Session, rows: Sequence[ModelRow], urls: Urls) -> list[dict[str, Any]]:
    """Many models with their latest versions and default examples, in two queries."""
    versions = latest_versions(session, (row.model for row in rows))
    examples = predictions_by_id(session, (row.model.default_example_id for row in rows))
    return [
        model_json(
            row,
            urls,
            versions.get(row.model.id),
            examples.get(row.model.default_example_id or ""),
        )
        for row in rows
    ]


def render_model(session: Session, row: ModelRow, urls: Urls) -> dict[str, Any]:
    return render_models(session, [row], urls)[0]


# --- requests -------------------------------------------------------------------------------


class ModelCreate(BaseModel):
    """`POST /models`: Replicate requires owner, name, visibility and hardware."""

    model_config = ConfigDict(extra="forbid")

    owner: str
    name: str
    visibility: Literal["public", "private"]
    hardware: str
    description: str | None = None
    github_url: str | None = None
    paper_url: str | None = None
    license_url: str | None = None
    cover_image_url: str | None = None


class ModelUpdate(BaseModel):
    """`PATCH /models/{owner}/{name}`: only the fields sent change; unknown keys are typos."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    readme: str | None = None
    github_url: str | None = None
    paper_url: str | None = None
    weights_url: str | None = None
    license_url: str | None = None
    cover_image_url: str | None = None
    visibility: Literal["public", "private"] | None = None
    hardware: str | None = None
    # An extension: a price per output instead of per second (docs/billing.md); null clears it.
    pricing: dict[str, Any] | None = None


#: The longest each text field may be (characters); docs/api.md lists them.
TEXT_LIMITS = {
    "owner": 64,  # the accounts column's width
    "description": DESCRIPTION_MAX,
    "readme": README_MAX,
    **dict.fromkeys(URL_FIELDS, URL_MAX),
}


def _field_errors(platform: Platform, values: dict[str, Any]) -> list[dict[str, str]]:
    errors = [
        issue
        for field, limit in TEXT_LIMITS.items()
        if (issue := text_problem(field, values.get(field), limit)) is not None
    ]
    if errors:  # the checks below read these texts
        return errors
    name = values.get("name")
    if name is not None and (not NAME.fullmatch(name) or len(name) > NAME_MAX):
        message = (
            f"must be at most {NAME_MAX} lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
        errors.append({"type": "pattern", "field": "name", "description": message})
    for field in URL_FIELDS:
        value = values.get(field)
        if value and not re.fullmatch(r"https?://[^/\s?#]+\S*", value):
            errors.append(
                {"type": "url", "field": field, "description": "must be an absolute http(s) URL"}
            )
    hardware = values.get("hardware")
    # A SKU the table knows and the backend can place; a version that needs a GPU may still be
    # pushed to a model on `cpu` (as on Replicate): its predictions fail at boot saying so.
    problem = hardware_error(platform, hardware) if hardware is not None else None
    if problem is not None:
        errors.append({"type": "enum", "field": "hardware", "description": problem})
    return errors


def _check(platform: Platform, values: dict[str, Any]) -> None:
    errors = _field_errors(platform, values)
    if errors:
        raise invalid_fields_problem(errors, "Invalid model")


# --- routes ---------------------------------------------------------------------------------


@router.post("/models", status_code=201)
def create(body: ModelCreate, platform: PlatformDep, account: AccountDep) -> JSONResponse:
    _check(platform, body.model_dump())
    if body.owner != account.username and not account.is_admin:
        raise Problem(
            403,
            f"You can only create models owned by your own account "
            f"({account.username}), not {body.owner}.",
            title="Forbidden",
        )
    fields = body.model_dump(exclude={"owner", "name"})
    for field in ("description", "github_url", "paper_url", "license_url", "cover_image_url"):
        fields[field] = fields[field] or None  # "" means none, as in PATCH
    with platform.db.session() as session:
        owner = account_by_username(session, body.owner)
        if owner is None:
            raise not_found(f"The account {body.owner} does not exist.")
        if get_model(session, body.owner, body.name) is not None:
            raise _exists(body.owner, body.name)
        try:
            row = create_model(session, owner, body.name, **fields)
        except IntegrityError:  # created meanwhile; leaving the block rolls back
            raise _exists(body.owner, body.name) from None
        return JSONResponse(render_model(session, row, platform.urls), status_code=201)


def _exists(owner: str, name: str) -> Problem:
    return Problem(409, f"A model named {owner}/{name} already exists.", title="Conflict")


@router.get("/models")
def list_(
    platform: PlatformDep,
    account: AccountDep,
    sort_by: str | None = None,
    sort_direction: str | None = None,
    cursor: str | None = None,
) -> JSONResponse:
    """Public models and the caller's own; newest latest version first by default."""
    sort = cast(SortBy, _choice("sort_by", sort_by, SORTS, "latest_version_created_at"))
    direction = _choice("sort_direction", sort_direction, ("asc", "desc"), "desc")
    after = _model_cursor(cursor)
    with platform.db.session() as session:
        rows = list_models(
            session,
            account.id,
            sort_by=sort,
            descending=direction == "desc",
            after=after,
            limit=PAGE_SIZE + 1,
        )
        models = render_models(session, rows, platform.urls)
    rendered = {row.model.id: model for row, model in zip(rows, models, strict=True)}
    body = page(
        rows,
        PAGE_SIZE,
        platform.urls.api("/models"),
        {"sort_by": sort_by, "sort_direction": sort_direction},
        key=lambda r: (sort_value(r.model, sort), str(r.model.id)),
        render=lambda r: rendered[r.model.id],
    )
    return JSONResponse(body)


def _choice(name: str, value: str | None, allowed: Sequence[str], default: str) -> str:
    if value is None:
        return default
    if value not in allowed:
        raise Problem(
            400, f"{name} must be one of {', '.join(allowed)}; got {value!r}.", title="Bad request"
        )
    return value


def _model_cursor(cursor: str | None) -> tuple[Any, int] | None:
    decoded = decode_cursor(cursor)
    if decoded is None:
        return None
    at, key = decoded
    model_id = parse_count(key, 18)  # the id column is a 64-bit integer
    if model_id is None:
        raise Problem(400, "The cursor is not valid; use the `next` URL of a page.")
    return at, model_id


@router.api_route("/models", methods=["QUERY"])
async def search(request: Request, platform: PlatformDep, account: AccountDep) -> JSONResponse:
    """The body is the query as text/plain: raw from the Python client, JSON-quoted from the JS
    client (it JSON-encodes every body), so one level of JSON string quoting comes off."""
    query = search_query(await request.body())
    with platform.db.session() as session:
        found = search_models(session, account.id, query, SEARCH_LIMIT)
        results = render_models(session, [row for row, _ in found], platform.urls)
    for result in results:
        # The spec types a search result's description as a plain string, not nullable.
        result["description"] = result["description"] or ""
    return JSONResponse({"next": None, "previous": None, "results": results})


def search_query(raw: bytes) -> str:
    try:
        text = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Problem(400, "The search query must be UTF-8 text.", title="Bad request") from None
    if len(text) >= 2 and text.startswith('"') and text.endswith('"'):
        try:
            decoded = json.loads(text)
        except ValueError:
            decoded = None
        if isinstance(decoded, str):
            text = decoded.strip()
    if not is_unicode(text) or "\x00" in text:
        raise Problem(
            400,
            "The search query must be Unicode text without NUL characters.",
            title="Bad request",
        )
    if not text:
        raise Problem(
            400, "The search query is empty; send it as the text/plain body.", title="Bad request"
        )
    if len(text) > QUERY_MAX:
        raise Problem(
            400, f"The search query is longer than {QUERY_MAX} characters.", title="Bad request"
        )
    return text


def _find(platform: Platform, account: Account, owner: str, name: str) -> ModelRow:
    """The model if the caller may see it; another account's private model is a 404."""
    with platform.db.session() as session:
        row = get_model(session, owner, name)
    if row is None or not can_see(row.model, account):
        raise not_found(NO_MODEL)
    return row


@router.get("/models/{owner}/{name}")
def get(owner: str, name: str, platform: PlatformDep, account: AccountDep) -> JSONResponse:
    row = _find(platform, account, owner, name)
    with platform.db.session() as session:
        body = render_model(session, row, platform.urls)
        if can_edit(row.model, account):  # its owner (and admins) see where it runs
            body["instances"] = model_instances(session, row.model.id, platform.db.shared)
        return JSONResponse(body)


@router.patch("/models/{owner}/{name}")
def update(
    owner: str, name: str, body: ModelUpdate, platform: PlatformDep, account: AccountDep
) -> JSONResponse:
    row = _find(platform, account, owner, name)
    if not can_edit(row.model, account):
        raise Problem(403, "Only the model's owner can change it.", title="Forbidden")
    changes = body.model_dump(include=body.model_fields_set)
    errors = _field_errors(platform, changes)
    errors += [
        {"type": "required", "field": field, "description": f"{field} cannot be null"}
        for field in ("visibility", "hardware")
        if field in changes and changes[field] is None
    ]
    if "pricing" in changes:
        try:
            pricing = parse_pricing(changes["pricing"])
        except PricingError as exc:
            errors.append({"type": "pricing", "field": "pricing", "description": str(exc)})
        else:
            changes["pricing"] = None if pricing is None else pricing.json()
    if errors:
        raise invalid_fields_problem(errors, "Invalid model")
    with platform.db.session() as session:
        model = session.get(Model, row.model.id)
        if model is None:
            raise not_found(NO_MODEL)  # deleted meanwhile
        for field, value in changes.items():
            setattr(model, field, value if value != "" else None)
        session.flush()
        result = render_model(session, ModelRow(model, row.owner), platform.urls)
    forget_versions(platform)  # committed: cached refs carry the model's old visibility
    if "hardware" in changes:  # after the commit: a spec read before it would keep the old SKU
        platform.engine.hardware_changed()
    return JSONResponse(result)


@router.delete("/models/{owner}/{name}", status_code=204)
def delete(owner: str, name: str, platform: PlatformDep, account: AccountDep) -> Response:
    """As on Replicate: only a private model without versions can be deleted."""
    row = _find(platform, account, owner, name)
    if not can_edit(row.model, account):
        raise Problem(403, "Only the model's owner can delete it.", title="Forbidden")
    if row.model.visibility != "private":
        raise Problem(
            409,
            "Only private models can be deleted; make it private first "
            "(PATCH visibility) if nobody depends on it.",
            title="Conflict",
        )
    with platform.db.session() as session:
        if has_versions(session, row.model.id):
            raise Problem(
                409,
                "The model still has versions; delete them first (DELETE …/versions/{version_id}).",
                title="Conflict",
            )
        delete_model(session, row.model.id)
    forget_versions(platform)  # committed: its cached "no versions yet" goes too
    return Response(status_code=204)


@router.get("/models/{owner}/{name}/readme")
def readme(owner: str, name: str, platform: PlatformDep, account: AccountDep) -> Response:
    row = _find(platform, account, owner, name)
    if not row.model.readme:
        raise not_found(f"The model {row.ref} has no README.")
    return PlainTextResponse(row.model.readme, media_type="text/plain; charset=utf-8")


@router.get("/models/{owner}/{name}/examples")
def examples(
    owner: str, name: str, platform: PlatformDep, account: AccountDep, cursor: str | None = None
) -> JSONResponse:
    """The predictions the model shows as examples, newest first."""
    row = _find(platform, account, owner, name)
    before = decode_cursor(cursor)
    with platform.db.session() as session:
        rows = list_examples(session, row.model.id, before=before, limit=EXAMPLES_PAGE_SIZE + 1)
    body = page(
        rows,
        EXAMPLES_PAGE_SIZE,
        platform.urls.api(f"/models/{row.ref}/examples"),
        {},
        key=lambda p: (p.created_at, p.id),
        render=lambda p: prediction_json(p, platform.urls),
    )
    return JSONResponse(body)
