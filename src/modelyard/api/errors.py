"""Errors as RFC 7807 problem+json, with Replicate's wording where the clients show it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from modelyard.store.space import NO_SPACE, RETRY_AFTER, out_of_space

PROBLEM = "application/problem+json"
log = logging.getLogger("modelyard.api")


class Problem(Exception):
    """Raise anywhere in a route: becomes `{title?, detail, status, ...extra}`."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.headers = headers or {}
        self.extra = extra


def problem_response(problem: Problem) -> JSONResponse:
    body: dict[str, Any] = {"detail": problem.detail, "status": problem.status}
    if problem.title:
        body["title"] = problem.title
    body.update(problem.extra)
    headers = dict(problem.headers or {})
    if problem.status == 409:
        # Every 409 here is for good (the name is taken, the version is in use); the v2 client
        # retries a 409 unless told not to, and a retried create would hide its own success.
        headers.setdefault("x-should-retry", "false")
    return JSONResponse(body, status_code=problem.status, headers=headers, media_type=PROBLEM)


def not_found(what: str = "Not found.") -> Problem:
    return Problem(404, what, title="Not found")


def invalid_fields_problem(fields: list[dict[str, str]], title: str) -> Problem:
    """Replicate's 422: `detail` lists each problem on its own `- field: message` line."""
    detail = "".join(f"- {f['field']}: {f['description']}\n" for f in fields)
    return Problem(422, detail, title=title, invalid_fields=fields)


def install(app: FastAPI) -> None:
    install_no_space(app)

    @app.exception_handler(Problem)
    async def _problem(_: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = [_field(error) for error in exc.errors()]
        return problem_response(invalid_fields_problem(fields, "Invalid request"))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem_response(
            Problem(500, "Internal server error; the server log has the details.", title="Error")
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = "Not found."
        if exc.status_code == 405:
            detail = "Method not allowed."
        return problem_response(Problem(exc.status_code, detail, headers=dict(exc.headers or {})))


def _field(error: dict[str, Any]) -> dict[str, str]:
    loc = [str(part) for part in error.get("loc", ()) if part != "body"]
    field = ".".join(loc) or "body"
    kind = error.get("type", "invalid")
    message = error.get("msg", "is invalid")
    if kind == "missing":
        return {"type": "required", "field": field, "description": f"{field} is required"}
    if kind == "json_invalid":
        return {"type": "json", "field": "body", "description": "the body is not valid JSON"}
    return {"type": kind, "field": field, "description": message}


# -- a full disk (issue 13, "Disk full and webhooks") -----------------------------------------
# Registered for the exception types a full disk arrives as, so Starlette's ExceptionMiddleware
# answers it: the connection stays usable (an exception that reaches the server-error handler is
# raised again after the 500, and uvicorn then closes the connection, failing the client's next
# request on it). Any other error of those types goes on to the handler of `Exception`.


def no_space_problem() -> Problem:
    """507 with `Retry-After`: nothing was stored, and the request may succeed once someone
    frees space."""
    return Problem(
        507,
        "The server's disk is full, so nothing was stored; try again later.",
        title="Insufficient Storage",
        headers={"Retry-After": str(RETRY_AFTER)},
    )


def install_no_space(app: FastAPI) -> None:
    async def _no_space(request: Request, exc: Exception) -> JSONResponse:
        if not out_of_space(exc):
            raise exc
        # One line, no traceback: the condition is the server's, not a bug (and the log's
        # RepeatFilter collapses a storm of them).
        log.warning("%s %s: 507, %s (%s)", request.method, request.url.path, NO_SPACE,
                    str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)  # fmt: skip
        return problem_response(no_space_problem())

    for kind in (OSError, SQLAlchemyError):
        app.add_exception_handler(kind, _no_space)
