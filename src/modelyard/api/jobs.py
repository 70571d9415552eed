"""Creating predictions and trainings: resolve the version, validate the input, store, queue,
and answer at once or (with `Prefer: wait`) once done. Shared by every create route.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from datetime import timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection

from modelyard.billing.limits import detail as spend_detail
from modelyard.billing.limits import refusal as spend_refusal
from modelyard.cogspec.inputs import InputValidationError, file_fields, validate_input
from modelyard.engine.engine import Refused
from modelyard.engine.views import prediction_json
from modelyard.store.ids import new_access_key
from modelyard.store.models import (
    ModelRow,
)
from modelyard.store.predictions import TERMINAL, Kind, NewPrediction
from modelyard.store.tables import Account, Prediction, utcnow
from modelyard.store.usage_report import MonthSpend

from .auth import signed_in_by_cookie
from .errors import Problem, invalid_fields_problem
from .limits import WEBHOOK_MAX, Text, text_problem
from .platform import Platform
from .refs import Target
from .responses import FastJSONResponse
from .tracecontext import trace_context

WebhookEvent = Literal["start", "output", "logs", "completed"]
_PREFER_WAIT = re.compile(r"(?:^|[,;]\s*)wait(?:=([0-9]+))?(?:\s*(?:[,;]|$))")
_SECONDS = re.compile(r"([0-9]+)")
_DURATION = re.compile(r"(?:([0-9]+)h)?(?:([0-9]+)m)?(?:([0-9]+)s)?")
_DIGITS = 9  # a longer number is above every maximum (and int() of it is not cheap)
CANCEL_AFTER_MAX = timedelta(days=7)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# `Prefer: wait` answers this long before the read timeout a client states (docs/api.md)
READ_TIMEOUT_MARGIN = 5.0
# on every answer to a create: the v2 client retries 5xx, 408, 409 and 429 unless told not to
NO_RETRY = {"x-should-retry": "false"}
log = logging.getLogger("modelyard.api")


class JobRequest(BaseModel):
    """The body of every create: unknown keys are ignored (the JS client passes extras)."""

    model_config = ConfigDict(extra="ignore")

    input: dict[str, Any]
    webhook: Text | None = None
    webhook_events_filter: list[WebhookEvent] | None = None
    webhook_completed: Text | None = None  # the legacy name of `webhook`
    stream: bool | None = None


class VersionedRequest(JobRequest):
    version: Text


def validated_input(
    platform: Platform, account: Account, target: Target, payload: dict[str, Any], component: str
) -> dict[str, Any]:
    """The input with defaults applied, validated once, against the version's stored schema;
    422 with Replicate's `invalid_fields` when it does not match."""
    schema = target.version.openapi_schema
    try:
        inputs = validate_input(schema, payload, component)
    except InputValidationError as exc:
        fields = [_invalid_field(error.loc, error.type, error.msg) for error in exc.errors]
        raise invalid_fields_problem(fields, "Input validation failed") from None
    problems = []
    for name, is_list in file_fields(schema, component).items():
        values = payload.get(name)
        for value in values if is_list and isinstance(values, list) else [values]:
            if value is not None and not _file_input_ok(platform, account, value):
                problems.append(
                    {
                        "type": "file",
                        "field": f"input.{name}",
                        "description": "must be an http(s) URL, a data: URI or a file of yours "
                        "uploaded to /v1/files",
                    }
                )
    if problems:
        raise invalid_fields_problem(problems, "Input validation failed")
    return inputs


def _invalid_field(loc: tuple[str | int, ...], kind: str, message: str) -> dict[str, str]:
    """One entry of `invalid_fields`, worded as Replicate words a missing input."""
    field = _field_name(loc)
    if kind in ("value_error.missing", "missing"):
        return {"type": "required", "field": "input", "description": f"{loc[-1]} is required"}
    return {"type": kind, "field": field, "description": message}


def _field_name(loc: tuple[str | int, ...]) -> str:
    """`input.steps` from cogspec's `("body", "input", "steps")`; `input` for the whole object."""
    parts = [str(part) for part in loc if part != "body"]
    if parts[:1] != ["input"]:
        parts.insert(0, "input")
    return ".".join(parts)


def _file_input_ok(platform: Platform, account: Account, value: Any) -> bool:
    if not isinstance(value, str):
        return False
    file_id = platform.engine.files.own_file_id(value)
    if file_id is not None:
        file = platform.engine.files.own_file(value)
        return file is not None and file.account_id == account.id
    return value.startswith(("http://", "https://", "data:"))


def _is_http_url(value: str) -> bool:
    try:
        parsed = urlsplit(value)
        _ = parsed.port  # raises for a port that is not a number
    except ValueError:
        return False
    return (
        parsed.scheme in ("http", "https")
        and bool(parsed.hostname)
        and not any(c.isspace() for c in value)
    )


def streams(target: Target, component: str = "Output") -> bool:
    output = target.version.openapi_schema.get("components", {}).get("schemas", {}).get(component)
    return isinstance(output, dict) and output.get("x-cog-array-type") == "iterator"


def cancel_after(request: Request) -> timedelta | None:
    """`Cancel-After: 30s | 5m | 1h30m45s | 30` (seconds without a unit; at least 5 s, at most
    `CANCEL_AFTER_MAX`)."""
    value = request.headers.get("cancel-after")
    if value is None:
        return None
    text = value.strip().lower()
    match = _SECONDS.fullmatch(text) or _DURATION.fullmatch(text)
    if not text or match is None:
        raise Problem(400, f"Cancel-After {value!r} is not a duration such as 30s, 5m or 1h30m")
    groups = [g or "0" for g in match.groups()]
    if match.re is _SECONDS:
        groups = ["0", "0", *groups]
    hours, minutes, secs = (int(g) if len(g) <= _DIGITS else 10**_DIGITS for g in groups)
    seconds = hours * 3600 + minutes * 60 + secs
    if seconds > CANCEL_AFTER_MAX.total_seconds():
        raise Problem(
            400, f"Cancel-After {value!r} is longer than the maximum of {_hours(CANCEL_AFTER_MAX)}"
        )
    return timedelta(seconds=max(5, seconds))


def _hours(delta: timedelta) -> str:
    return f"{int(delta.total_seconds()) // 3600}h"


def prefer_wait(request: Request, maximum: float) -> float | None:
    """Seconds to hold the request for `Prefer: wait[=N]`, capped at `maximum` (a number too
    long to read is above it too)."""
    match = _PREFER_WAIT.search(request.headers.get("prefer", ""))
    if match is None:
        return None
    digits = match.group(1)
    if not digits or len(digits) > _DIGITS:
        return float(maximum)
    return float(min(max(int(digits), 1), maximum))


async def create_job(
    platform: Platform,
    request: Request,
    account: Account,
    target: Target,
    body: JobRequest,
    *,
    kind: Kind = "prediction",
    deployment: tuple[int, str] | None = None,
    destination: ModelRow | None = None,
) -> Prediction:
    # Every header is read before anything is stored: a retrying client must not make copies.
    deadline = cancel_after(request)
    component = "TrainingInput" if kind == "training" else "Input"
    inputs = validated_input(platform, account, target, body.input, component)
    webhook = body.webhook or body.webhook_completed
    field = "webhook" if body.webhook else "webhook_completed"
    problem = text_problem(field, webhook, WEBHOOK_MAX)
    if problem is None and webhook is not None and not _is_http_url(webhook):
        problem = {
            "type": "url",
            "field": field,
            "description": "must be an http(s) URL with a host",
        }
    if problem is not None:
        raise invalid_fields_problem([problem], "Invalid request")
    wants_stream = kind == "prediction" and (streams(target) or bool(body.stream))
    new = NewPrediction(
        account_id=account.id,
        model_id=target.model.model.id,
        model_ref=target.model.ref,
        version_pk=target.version.pk,
        version_id=target.version.id,
        input=body.input,
        kind=kind,
        source="web" if signed_in_by_cookie(request) else "api",
        webhook=webhook,
        webhook_events_filter=list(body.webhook_events_filter)
        if body.webhook_events_filter is not None
        else None,
        deadline=utcnow() + deadline if deadline else None,
        deployment_id=deployment[0] if deployment else None,
        deployment_ref=deployment[1] if deployment else None,
        destination_model_id=destination.model.id if destination else None,
        destination_ref=destination.ref if destination else None,
        stream_key=new_access_key() if wants_stream else None,
        trace_context=trace_context(request.headers),  # a malformed one is ignored, never a 4xx
    )
    # 402 when the payer's monthly spend limit is reached (billing/limits.py), checked in the
    # transaction that would store the prediction, with the payer's row locked on PostgreSQL:
    # the month's spend only grows when the ledger records usage, so every create checked
    # after that commit is refused, on every replica, and a create costs one commit.
    account_id, deployment_id = account.id, new.deployment_id

    def past_spend_limit(connection: Connection) -> MonthSpend | None:
        return spend_refusal(connection, account_id, deployment_id=deployment_id)

    try:
        return await platform.engine.create(new, inputs, refuse=past_spend_limit)
    except Refused as refused:
        reached: MonthSpend = refused.reason
        raise Problem(
            402,
            spend_detail(reached),
            title="Spend limit reached",
            headers=dict(NO_RETRY),
            **reached.as_json(),
        ) from None


async def respond(platform: Platform, request: Request, prediction: Prediction) -> JSONResponse:
    """201 right away, or after waiting for `Prefer: wait`; a non-terminal wait says starting.

    The prediction is stored by now, so no answer from here on may be one the v2 client retries
    (408, 409, 429, 5xx: each retry would create another prediction): every answer says
    `x-should-retry: false`, and an unexpected error still answers 201 with the stored row."""
    try:
        return await _respond(platform, request, prediction)
    except Exception:
        log.exception("answering the create of %s", prediction.id)
    try:
        body = prediction_json(prediction, platform.urls)
    except Exception:
        log.exception("rendering %s", prediction.id)
        detail = f"{prediction.id} was created, but the answer failed; GET it to follow it."
        return JSONResponse(
            {"detail": detail, "status": 500, "title": "Error", "id": prediction.id},
            500,
            headers=NO_RETRY,
            media_type="application/problem+json",
        )
    return FastJSONResponse(body, 201, headers=_created_headers(platform, prediction))


def _created_headers(platform: Platform, prediction: Prediction) -> dict[str, str]:
    return {"Location": platform.urls.prediction(prediction.id, prediction.kind), **NO_RETRY}


async def _respond(platform: Platform, request: Request, prediction: Prediction) -> JSONResponse:
    wait = prefer_wait(request, platform.settings.sync_wait_max)
    headers = _created_headers(platform, prediction)
    if wait is None:
        return FastJSONResponse(prediction_json(prediction, platform.urls), 201, headers=headers)
    latest = await _hold(platform, prediction.id, hold_seconds(wait, read_timeout(request)))
    body = prediction_json(latest or prediction, platform.urls)
    headers["Preference-Applied"] = f"wait={int(wait)}"
    if body["status"] not in TERMINAL:
        body["status"] = "starting"  # the clients treat anything else as finished
        return FastJSONResponse(body, 202, headers=headers)
    return FastJSONResponse(body, 201, headers=headers)


async def _hold(platform: Platform, prediction_id: str, seconds: float) -> Prediction | None:
    """The prediction once it ends, or None when `seconds` pass or the server begins to stop
    first (its connection would be cut, and the v2 client would send the create again)."""
    if platform.stopping.is_set():
        return None
    ended = asyncio.ensure_future(
        platform.engine.log.wait_until(prediction_id, lambda p: p.status in TERMINAL, seconds)
    )
    stopping = asyncio.ensure_future(platform.stopping.wait())
    try:
        await asyncio.wait((ended, stopping), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (ended, stopping):
            task.cancel()
    return ended.result() if ended.done() and not ended.cancelled() else None


def read_timeout(request: Request) -> float | None:
    """The client's read timeout in seconds, as the Stainless-built clients send it: the Python
    v2 client in `x-stainless-read-timeout`, the JavaScript SDK (under Replicate's MCP server) in
    `x-stainless-timeout`, its whole-request timeout; None when absent or not a positive number."""
    headers = request.headers
    raw = headers.get("x-stainless-read-timeout") or headers.get("x-stainless-timeout", "")
    try:
        value = float(raw[:32])
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def hold_seconds(wait: float, client_timeout: float | None) -> float:
    """How long `Prefer: wait=N` holds the request: N less a quarter second (the 1.0.7 client's
    read timeout is N + 0.5 s), and, when the client says its read timeout, at most that less
    `READ_TIMEOUT_MARGIN` (a quarter of it for a short one). An answer that comes after the
    timeout is one the client never reads: it retries the POST and makes a copy."""
    hold = max(0.5, wait - 0.25)
    if client_timeout is not None:
        margin = min(READ_TIMEOUT_MARGIN, client_timeout / 4)
        hold = min(hold, client_timeout - margin)
    return max(0.0, hold)
