"""The Usage page (`/usage`): what an account spent, by day and by model, as a stacked bar chart
(server-rendered SVG: no script, nothing from another site) and tables, with a CSV download (the
API's `GET /v1/account/usage?format=csv`, signed in by the page's cookie), and its monthly spend
limit. An admin picks any account, or all of them.

Every page shows a notice while the viewer's limit is reached (`spend_notice`, used by
base.html).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from modelyard.store.accounts import account_by_username
from modelyard.store.tables import Account
from modelyard.store.usage_report import (
    MonthSpend,
    UsageRow,
    month_spend,
    usage_rows,
    usd,
    usd_to_nanos,
)

from .context import (
    Viewer,
    error_page,
    refuse_form,
    render,
    services,
    sign_in_first,
    templates,
    viewer,
)

router = APIRouter()

MAX_DAYS = 366  # as the API's range
ALL = "*"
CHART_HEIGHT = 160
BAR_WIDTH = 18
COLOURS = ("#2f6fdb", "#1b7f3b", "#9a6700", "#b42318", "#6941c6", "#0e7090", "#c11574", "#667085")


def _today() -> date:
    return datetime.now(UTC).date()


@dataclass(frozen=True)
class Bar:
    """One segment of the chart: a model's cost on a day, placed in the SVG's coordinates."""

    x: int
    y: float
    height: float
    colour: str
    title: str


def chart(rows: list[UsageRow], first: date, last: date, models: list[str]) -> list[Bar]:
    """Stacked bars, one per day from `first` to `last`, one segment per model (by cost)."""
    cost: dict[tuple[date, str], int] = {}
    for row in rows:
        if row.day is not None:
            key = (row.day, row.model or "(deleted model)")
            cost[key] = cost.get(key, 0) + row.cost_nanos
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    totals = {day: sum(c for (d, _), c in cost.items() if d == day) for day in days}
    peak = max(totals.values(), default=0) or 1
    bars = []
    for index, day in enumerate(days):
        top = float(CHART_HEIGHT)
        for number, model in enumerate(models):
            nanos = cost.get((day, model), 0)
            if nanos <= 0:
                continue
            height = CHART_HEIGHT * nanos / peak
            top -= height
            title = f"{day.isoformat()} · {model}: ${usd(nanos)}"
            colour = COLOURS[number % len(COLOURS)]
            bars.append(
                Bar(index * (BAR_WIDTH + 4), round(top, 2), round(height, 2), colour, title)
            )
    return bars


def _sums(rows: list[UsageRow], key: str) -> list[dict[str, Any]]:
    """Seconds and cost by `key` ("model" or "day"), the costliest model first / days in order."""
    found: dict[Any, dict[str, Any]] = {}
    for row in rows:
        name = getattr(row, key) or "(deleted model)"
        entry = found.setdefault(name, {"name": name, "seconds": 0.0, "nanos": 0})
        entry["seconds"] += row.seconds
        entry["nanos"] += row.cost_nanos
    listed = list(found.values())
    if key == "model":
        listed.sort(key=lambda entry: (-entry["nanos"], entry["name"]))
    for entry in listed:
        entry["cost"] = usd(entry["nanos"])
    return listed


def _range(request: Request) -> tuple[date, date] | str:
    """`from` and `to` of the query (default: this month so far), or why they are wrong."""
    today = _today()
    try:
        last = date.fromisoformat(request.query_params.get("to") or today.isoformat())
        first = date.fromisoformat(
            request.query_params.get("from") or last.replace(day=1).isoformat()
        )
    except ValueError:
        return "Dates are written YYYY-MM-DD."
    if first > last or (last - first).days + 1 > MAX_DAYS:
        return f"The first day must come before the last, at most {MAX_DAYS} days apart."
    return first, last


def _target(session: Session, who: Viewer, name: str | None) -> Account | None | tuple[int, str]:
    """The account shown: the viewer's, or (admins) the one picked; None for all; or why not
    (an HTTP status and a sentence)."""
    assert who.account is not None
    if not name or name == who.account.username:
        return session.get(Account, who.account.id)
    if not who.account.is_admin:
        return 403, "Only an admin sees other accounts' usage."
    if name == ALL:
        return None
    return account_by_username(session, name) or (404, f"There is no account {name}.")


@router.get("/usage", response_class=HTMLResponse, include_in_schema=False)
def usage_page(request: Request, account: str | None = None) -> Response:
    who = viewer(request)
    if who.account is None:
        return sign_in_first("/usage")
    span = _range(request)
    if isinstance(span, str):
        return error_page(request, who, 400, "Bad dates", span)
    first, last = span
    with services(request).db.session() as session:
        target = _target(session, who, account)
        if isinstance(target, tuple):
            return error_page(request, who, target[0], "No usage", target[1])
        ids = None if target is None else [target.id]
        rows = usage_rows(session, ids, first, last, ["day", "model"])
        spend = (
            None
            if target is None
            else month_spend(session, target.id, target.spend_limit_nanos, _today())
        )
        accounts = (
            list(session.scalars(select(Account.username).order_by(Account.username)))
            if who.account.is_admin
            else []
        )
    models = [entry["name"] for entry in _sums(rows, "model")]
    query = {
        "from": first.isoformat(),
        "to": last.isoformat(),
        "group_by": "day,model,hardware,phase",
        "format": "csv",
    }
    picked = "" if target is not None and target.id == who.account.id else (account or "")
    if picked:
        query["account"] = picked
    return render(
        request, "usage.html", who,
        target=target, picked=picked, accounts=accounts, first=first, last=last,
        bars=chart(rows, first, last, models), days=(last - first).days + 1,
        legend=[(m, COLOURS[n % len(COLOURS)]) for n, m in enumerate(models)],
        by_model=_sums(rows, "model"), by_day=_sums(rows, "day"),
        total=usd(sum(row.cost_nanos for row in rows)), spend=spend,
        limit_value="" if spend is None or spend.limit_nanos is None else usd(spend.limit_nanos),
        csv_url="/v1/account/usage?" + urlencode(query),
        chart_height=CHART_HEIGHT, bar_width=BAR_WIDTH,
    )  # fmt: skip


@router.post("/usage/limit", include_in_schema=False)
def set_limit(
    request: Request, csrf: str = Form(""), spend_limit_usd: str = Form(""), account: str = Form("")
) -> Response:
    """The page's form: a limit in dollars (empty removes it), for the account shown."""
    who = viewer(request)
    if (refused := refuse_form(request, who, csrf, "/usage")) is not None:
        return refused
    try:
        limit = usd_to_nanos(spend_limit_usd.strip() or None)
    except ValueError as exc:
        return error_page(request, who, 400, "Invalid limit", f"The limit {exc}.")
    with services(request).db.session() as session:
        target = _target(session, who, account or None)
        if not isinstance(target, Account):
            return error_page(
                request, who, 403, "Not allowed", "Pick one account to set its limit."
            )
        target.spend_limit_nanos = limit
    services(request).tokens.clear()
    back = "/usage" + (f"?{urlencode({'account': account})}" if account else "")
    return RedirectResponse(back, status_code=303)


def spend_notice(request: Request, who: Viewer) -> MonthSpend | None:
    """The viewer's spend this month when their limit is reached (every page says so), else
    None; costs a query only for an account with a limit."""
    if who.account is None or who.account.spend_limit_nanos is None:
        return None
    with services(request).db.session() as session:
        state = month_spend(session, who.account.id, who.account.spend_limit_nanos, _today())
    return state if state.reached else None


templates.env.globals["spend_notice"] = spend_notice
templates.env.filters["usd"] = usd
