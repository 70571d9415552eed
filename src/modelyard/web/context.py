"""What every page needs: the server's services, who is looking (`Viewer`), and rendering.

The pages read the same store and engine as the API; the Playground's JavaScript runs predictions
through the API itself, signed in by the session cookie (see `api/auth.py`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markdown_it import MarkdownIt

from modelyard.engine.engine import Engine
from modelyard.settings import Settings
from modelyard.store.database import Database
from modelyard.store.sessions import SESSION_COOKIE, session_account
from modelyard.store.tables import Account

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
# Model cards are written by model authors: no raw HTML, links and images only.
_markdown = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


class Clearable(Protocol):
    def clear(self) -> None: ...


class Services(Protocol):
    """The parts of the API's `Platform` the pages use (`app.state.platform`)."""

    settings: Settings
    db: Database
    engine: Engine
    tokens: Clearable  # the API's cache of tokens: a token revoked here stops working at once


@dataclass(frozen=True)
class Viewer:
    """Who is looking at a page: an account with its session token, or nobody."""

    account: Account | None
    session_token: str | None

    @property
    def csrf(self) -> str:
        """The token forms carry: derived from the session, so it changes with each sign-in."""
        if self.session_token is None:
            return ""
        return hashlib.sha256(b"csrf " + self.session_token.encode()).hexdigest()[:32]

    def csrf_ok(self, given: str) -> bool:
        return bool(self.csrf) and hmac.compare_digest(self.csrf, given)


def services(request: Request) -> Services:
    return request.app.state.platform  # type: ignore[no-any-return]


def viewer(request: Request) -> Viewer:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return Viewer(None, None)
    with services(request).db.session() as session:
        account = session_account(session, token)
    return Viewer(account, token if account is not None else None)


def render(
    request: Request, template: str, who: Viewer, status: int = 200, **context: Any
) -> HTMLResponse:
    """A page; every template gets the viewer, the public URL and the request."""
    base = {"viewer": who, "public_url": services(request).settings.public_url}
    return templates.TemplateResponse(request, template, {**base, **context}, status_code=status)


def sign_in_first(next_path: str) -> RedirectResponse:
    return RedirectResponse(f"/signin?next={next_path}", status_code=303)


def refuse_form(request: Request, who: Viewer, csrf: str, back: str) -> Response | None:
    """Why a posted form may not act (not signed in, or not this page's form), or None."""
    if who.account is None:
        return sign_in_first(back)
    if not who.csrf_ok(csrf):
        return error_page(request, who, 403, "Form expired", "Reload the page and try again.")
    return None


def error_page(request: Request, who: Viewer, status: int, title: str, detail: str) -> HTMLResponse:
    return render(request, "error.html", who, status, title=title, detail=detail)


def markdown(text: str | None) -> str:
    return _markdown.render(text or "")


def ago(when: datetime | None) -> str:
    """ "3 minutes ago", as a listing shows it."""
    if when is None:
        return ""
    seconds = int((datetime.now(UTC) - when).total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


def pretty(value: Any) -> str:
    """JSON for people, escaped by the template like any text (not `tojson`'s \u0027)."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def run_times(
    metrics: dict[str, Any] | None,
    created_at: datetime | str | None,
    started_at: datetime | str | None,
    completed_at: datetime | str | None,
) -> dict[str, float]:
    """A prediction's times in seconds, as the pages show them: `total` (created to completed,
    what the user waited), `queue` (created to started: waiting for a worker, a cold boot
    included), `setup` (the boot's `setup()`, on an instance's first prediction) and `predict`
    (the runner's own figure). Only those known are present."""
    # a row's datetimes, or the API JSON's ISO 8601 strings
    created_at, started_at, completed_at = (
        datetime.fromisoformat(t) if isinstance(t, str) else t
        for t in (created_at, started_at, completed_at)
    )
    metrics = metrics or {}
    times: dict[str, float] = {}
    total = metrics.get("total_time")
    if total is None and created_at is not None and completed_at is not None:
        total = (completed_at - created_at).total_seconds()
    if total is not None:
        times["total"] = float(total)
    if created_at is not None and started_at is not None:
        times["queue"] = max(0.0, (started_at - created_at).total_seconds())
    if metrics.get("boot_setup_time") is not None:
        times["setup"] = float(metrics["boot_setup_time"])
    if metrics.get("predict_time") is not None:
        times["predict"] = float(metrics["predict_time"])
    return times


templates.env.globals["run_times"] = run_times
templates.env.filters["markdown"] = markdown
templates.env.filters["ago"] = ago
templates.env.filters["duration"] = duration
templates.env.filters["pretty"] = pretty


SECRET_MASK = "**********"


def shown_prediction(body: dict[str, Any], schema: dict[str, Any], kind: str) -> dict[str, Any]:
    """What a page may show of a prediction's JSON: no webhook (its URL may hold a secret), and
    the values of `Secret` inputs masked, as Cog itself prints them."""
    component = "TrainingInput" if kind == "training" else "Input"
    properties = schema.get("components", {}).get("schemas", {}).get(component, {})
    secret = {
        name for name, prop in properties.get("properties", {}).items()
        if prop.get("x-cog-secret") or prop.get("format") == "password"
    }  # fmt: skip
    shown = {k: v for k, v in body.items() if k not in ("webhook", "webhook_events_filter")}
    shown["input"] = {
        k: SECRET_MASK if k in secret and v is not None else v
        for k, v in (body.get("input") or {}).items()
    }
    return shown
