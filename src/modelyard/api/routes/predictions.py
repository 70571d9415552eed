"""Predictions: create (by version, by model, by deployment elsewhere), get, list, cancel."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from modelyard.engine.views import prediction_json
from modelyard.store.predictions import Kind, PredictionFilter, get_prediction, list_predictions
from modelyard.store.tables import Account, Prediction

from ..auth import AccountDep
from ..errors import Problem, not_found
from ..jobs import JobRequest, VersionedRequest, create_job, respond
from ..pages import decode_cursor, page
from ..platform import Platform, PlatformDep
from ..refs import latest_of, resolve_version
from ..responses import FastJSONResponse

router = APIRouter(tags=["predictions"])
PAGE_SIZE = 100
NO_STORE = {"Cache-Control": "no-store"}


@router.post("/predictions", status_code=201)
async def create(
    body: VersionedRequest, request: Request, platform: PlatformDep, account: AccountDep
) -> JSONResponse:
    target = await resolve_version(platform, account, body.version)
    prediction = await create_job(platform, request, account, target, body)
    return await respond(platform, request, prediction)


@router.post("/models/{owner}/{name}/predictions", status_code=201)
async def create_for_model(
    owner: str,
    name: str,
    body: JobRequest,
    request: Request,
    platform: PlatformDep,
    account: AccountDep,
) -> JSONResponse:
    """Every model, not only "official" ones: it runs the latest version."""
    target = await latest_of(platform, account, owner, name)
    prediction = await create_job(platform, request, account, target, body)
    return await respond(platform, request, prediction)


def owned(platform: Platform, account: Account, prediction_id: str, kind: Kind) -> Prediction:
    with platform.db.session() as session:
        prediction = get_prediction(session, prediction_id)
    if prediction is None or prediction.kind != kind or prediction.account_id != account.id:
        raise not_found(f"The requested {kind} does not exist.")
    return prediction


def get_job(platform: Platform, account: Account, job_id: str, kind: Kind) -> JSONResponse:
    """GET of a prediction or training (`no-store`: polling clients must not see a cached one)."""
    job = owned(platform, account, job_id, kind)
    return FastJSONResponse(prediction_json(job, platform.urls), headers=NO_STORE)


async def cancel_job(platform: Platform, account: Account, job_id: str, kind: Kind) -> JSONResponse:
    await asyncio.to_thread(owned, platform, account, job_id, kind)
    job = await platform.engine.cancel(job_id)
    assert job is not None
    return JSONResponse(prediction_json(job, platform.urls))


@router.get("/predictions/{prediction_id}")
def get(prediction_id: str, platform: PlatformDep, account: AccountDep) -> JSONResponse:
    return get_job(platform, account, prediction_id, "prediction")


@router.post("/predictions/{prediction_id}/cancel")
async def cancel(prediction_id: str, platform: PlatformDep, account: AccountDep) -> JSONResponse:
    return await cancel_job(platform, account, prediction_id, "prediction")


@router.get("/predictions")
def list_(
    request: Request,
    platform: PlatformDep,
    account: AccountDep,
    cursor: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    model: Annotated[str | None, Query(description="owner/name")] = None,
    version: str | None = None,
    status: str | None = None,
    source: str | None = None,
    deployment: str | None = None,
) -> JSONResponse:
    """Newest first, 100 a page; `model`, `version`, `status` filters are ours (py#192)."""
    return list_jobs(platform, account, "prediction", locals())


def list_jobs(platform: Platform, account: Account, kind: Kind, args: dict) -> JSONResponse:
    params = {
        k: (v.isoformat() if isinstance(v, datetime) else v)
        for k, v in args.items()
        if k in ("created_after", "created_before", "model", "version", "status", "source")
    }
    if args.get("status") and args["status"] not in _STATUSES:
        raise Problem(400, f"status must be one of {', '.join(sorted(_STATUSES))}")
    where = PredictionFilter(
        account_id=account.id,
        kind=kind,
        created_after=args.get("created_after"),
        created_before=args.get("created_before"),
        model_ref=args.get("model"),
        version_id=args.get("version"),
        status=args.get("status"),
        source=args.get("source"),
    )
    with platform.db.session() as session:
        rows = list_predictions(
            session, where, before=decode_cursor(args.get("cursor")), limit=PAGE_SIZE + 1
        )
    collection = "trainings" if kind == "training" else "predictions"
    body = page(
        rows,
        PAGE_SIZE,
        platform.urls.api(f"/{collection}"),
        params,
        key=lambda p: (p.created_at, p.id),
        render=lambda p: prediction_json(p, platform.urls),
    )
    return JSONResponse(body, headers=NO_STORE)


_STATUSES = {"starting", "processing", "succeeded", "failed", "canceled"}
