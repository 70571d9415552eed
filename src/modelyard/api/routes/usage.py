"""An account's usage, from the metering ledger: `GET /v1/account/usage` (an extension; the
official clients do not call it), as JSON or CSV. docs/api.md, "Usage and spend limits".

    GET /v1/account/usage?from=2026-12-01&to=2026-12-31&group_by=day,model&format=csv

An admin may ask for another account (`account=<username>`) or for every account
(`account=*`).
"""

from __future__ import annotations

import asyncio
import csv
import io
import re
from datetime import date
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from modelyard.billing.limits import today as utc_today
from modelyard.store.accounts import account_by_username
from modelyard.store.tables import Account
from modelyard.store.usage_report import (
    GROUPS,
    MonthSpend,
    UsageRow,
    month_spend,
    usage_rows,
    usd,
)

from ..auth import AccountDep
from ..errors import Problem, invalid_fields_problem
from ..platform import Platform, PlatformDep

router = APIRouter(tags=["usage"])

MAX_DAYS = 366  # a range covers at most this many days (a year, leap or not)
DEFAULT_GROUPS = ("day", "model", "hardware", "phase")
ALL = "*"
_DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _invalid(field: str, description: str) -> Problem:
    return invalid_fields_problem(
        [{"type": "invalid", "field": field, "description": description}], "Invalid request"
    )


def parse_day(field: str, value: str | None, default: date) -> date:
    if value is None or value == "":
        return default
    try:
        if not _DAY.match(value):
            raise ValueError
        return date.fromisoformat(value)
    except ValueError:
        raise _invalid(field, "must be a date as YYYY-MM-DD (UTC)") from None


def parse_range(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    """`from` and `to` (both included): by default `to` is today and `from` the first day of
    `to`'s month (the web page picks the same)."""
    last = parse_day("to", end, today)
    first = parse_day("from", start, last.replace(day=1))
    if first > last:
        raise _invalid("from", "must be on or before `to`")
    if (last - first).days + 1 > MAX_DAYS:
        raise _invalid("to", f"the range covers at most {MAX_DAYS} days")
    return first, last


def parse_groups(value: str | None) -> list[str]:
    """`group_by`: a comma-separated list of `GROUPS` (empty: one row per unit)."""
    if value is None:
        return list(DEFAULT_GROUPS)
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in GROUPS]
    if unknown:
        raise _invalid("group_by", f"{', '.join(unknown)}: each must be one of {', '.join(GROUPS)}")
    return [name for name in GROUPS if name in names]  # in the columns' order, once each


def whose(platform: Platform, caller: Account, name: str | None) -> Account | None:
    """The account a request is about: the caller's own, or (admins only) the one named;
    None for every account (`*`, admins only). 403 for others' accounts, 404 for unknown."""
    if name is None or name == "" or name == caller.username:
        return caller
    if not caller.is_admin:
        raise Problem(403, "Only an admin may see or change another account.", title="Forbidden")
    if name == ALL:
        return None
    with platform.db.session() as session:
        found = account_by_username(session, name)
    if found is None:
        raise _invalid("account", f"there is no account {name!r}")
    return found


def _report(
    platform: Platform, account: Account | None, first: date, last: date, groups: list[str],
    today: date,
) -> tuple[list[UsageRow], MonthSpend | None]:  # fmt: skip
    with platform.db.session() as session:
        ids = None if account is None else [account.id]
        rows = usage_rows(session, ids, first, last, groups)
        if account is None:
            return rows, None
        limit = session.get(Account, account.id)
        assert limit is not None
        return rows, month_spend(session, account.id, limit.spend_limit_nanos, today)


def wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt is not None and fmt not in ("json", "csv"):
        raise _invalid("format", "must be json or csv")
    if fmt is not None:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept


def totals(rows: list[UsageRow]) -> dict[str, Any]:
    quantities: dict[str, float] = {}
    for row in rows:
        quantities[row.unit] = round(quantities.get(row.unit, 0.0) + row.quantity, 6)
    return {
        "seconds": round(sum(row.seconds for row in rows), 6),
        "quantity": quantities,
        "cost_usd": usd(sum(row.cost_nanos for row in rows)),
    }


def as_csv(rows: list[UsageRow], groups: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    columns = [*groups, "unit", "billed", "seconds", "quantity", "cost_usd"]
    writer.writerow(columns)
    for row in rows:
        body = row.as_json(groups)
        body["billed"] = "true" if row.billed else "false"
        writer.writerow(["" if body[c] is None else body[c] for c in columns])
    return out.getvalue()


@router.get("/account/usage")
async def get_usage(
    request: Request,
    platform: PlatformDep,
    caller: AccountDep,
    account: str | None = None,
    group_by: str | None = None,
    format: str | None = None,
    start: str | None = Query(None, alias="from"),
    end: str | None = Query(None, alias="to"),
) -> Response:
    today = utc_today()
    first, last = parse_range(start, end, today)
    groups = parse_groups(group_by)
    csv_wanted = wants_csv(request, format)
    target = await asyncio.to_thread(whose, platform, caller, account)
    if target is None and "account" not in groups:
        groups = ["account", *groups]  # every account's rows say whose they are
    rows, spend = await asyncio.to_thread(_report, platform, target, first, last, groups, today)
    who = target.username if target is not None else "all"
    if csv_wanted:
        name = f"usage-{who}-{first.isoformat()}-{last.isoformat()}.csv"
        return Response(
            as_csv(rows, groups),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    body: dict[str, Any] = {
        "account": None if target is None else target.username,
        "from": first.isoformat(),
        "to": last.isoformat(),
        "group_by": groups,
        "results": [row.as_json(groups) for row in rows],
        "totals": totals(rows),
    }
    if spend is not None:
        body["spend_limit"] = spend.as_json()
    return JSONResponse(body)
