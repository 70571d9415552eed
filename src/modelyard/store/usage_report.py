"""Reading the metering ledger (`usage`): sums by day, model, SKU and phase for people, and an
account's billed spend in a month for its spend limit (billing/limits.py).

The ledger's rows are written elsewhere (store/ledger.py); nothing here writes them. Money stays
in integer nano-USD until it is shown, so every sum is exact on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection, bindparam, func, nulls_last, select, update
from sqlalchemy.orm import Session, aliased

from .tables import Account, Deployment, Model, Usage

#: What `usage_rows` may group by, in the order the columns are shown.
GROUPS = ("day", "account", "model", "hardware", "phase")
NANOS = 10**9


def usd(nanos: int) -> str:
    """Nano-USD as a decimal string of dollars, exact: at least 2 decimals, no trailing zeros
    beyond them ("0.00", "1.50", "0.000115")."""
    text = f"{Decimal(nanos) / NANOS:.9f}".rstrip("0")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(2, '0')}"


#: The largest limit one may set, in USD (an integer nano-USD column holds far more).
MAX_LIMIT_USD = Decimal(1_000_000_000)


def month_bounds(day: date) -> tuple[date, date, str]:
    """The first and last day of `day`'s month, and its name ("2026-12")."""
    first = day.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return first, following - timedelta(days=1), f"{first.year:04d}-{first.month:02d}"


def usd_to_nanos(value: Any) -> int | None:
    """A limit in USD (a number or a decimal string; None clears it) as nano-USD. Raises
    ValueError saying why for anything else: negative, not finite, above `MAX_LIMIT_USD`, or
    finer than a nano-dollar."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("must be a number of US dollars, or null to remove the limit")  # noqa: TRY004 - callers answer ValueError as a 422
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError("must be a number of US dollars, or null to remove the limit") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError("must be a finite number of US dollars, 0 or more")
    if amount > MAX_LIMIT_USD:
        raise ValueError(f"must be at most {MAX_LIMIT_USD} US dollars")
    nanos = amount * NANOS
    if nanos != nanos.to_integral_value():
        raise ValueError("has more than 9 decimal places")
    return int(nanos)


@dataclass(frozen=True)
class UsageRow:
    """One group of ledger rows: its keys (those asked for; None for the rest) and its sums."""

    day: date | None
    account: str | None
    model: str | None  # owner/name; None for a model since deleted (or not grouped)
    hardware: str | None
    phase: str | None
    unit: str  # quantities of different units are never added together
    billed: bool
    seconds: float
    quantity: float
    cost_nanos: int

    def as_json(self, groups: Sequence[str]) -> dict[str, Any]:
        """The row for the API: the grouped keys, then the sums (`cost_usd` a decimal string)."""
        body: dict[str, Any] = {}
        for name in groups:
            value = getattr(self, name)
            body[name] = value.isoformat() if isinstance(value, date) else value
        body.update(
            unit=self.unit,
            billed=self.billed,
            seconds=round(self.seconds, 6),
            quantity=round(self.quantity, 6),
            cost_usd=usd(self.cost_nanos),
        )
        return body


def usage_rows(
    session: Session,
    account_ids: Sequence[int] | None,
    start: date,
    end: date,
    groups: Sequence[str],
) -> list[UsageRow]:
    """The ledger's rows from `start` to `end` (UTC days, both included) of these accounts (None:
    every account), summed by `groups` (each one of `GROUPS`) and always by unit and billed."""
    unknown = [name for name in groups if name not in GROUPS]
    if unknown:
        raise ValueError(f"cannot group by {', '.join(unknown)}")
    payer = aliased(Account)
    owner = aliased(Account)
    model_ref = (owner.username + "/" + Model.name).label("model")
    keys: dict[str, Any] = {
        "day": Usage.day,
        "account": payer.username.label("account"),
        "model": model_ref,
        "hardware": Usage.hardware,
        "phase": Usage.phase,
    }
    chosen = [keys[name] for name in GROUPS if name in groups]
    query = (
        select(
            *chosen,
            Usage.unit,
            Usage.billed,
            func.sum(Usage.seconds),
            func.sum(Usage.quantity),
            func.sum(Usage.cost_nanos),
        )
        .select_from(Usage)
        .join(payer, payer.id == Usage.account_id)
        .outerjoin(Model, Model.id == Usage.model_id)
        .outerjoin(owner, owner.id == Model.owner_id)
        .where(Usage.day >= start, Usage.day <= end)
        .group_by(*chosen, Usage.unit, Usage.billed)
        # NULLS LAST on both databases (SQLite sorts NULL first, PostgreSQL last by default)
        .order_by(*[nulls_last(column) for column in chosen], Usage.unit, Usage.billed.desc())
    )
    if account_ids is not None:
        query = query.where(Usage.account_id.in_(account_ids))
    rows = []
    for found in session.execute(query):
        named = dict(zip([name for name in GROUPS if name in groups], found, strict=False))
        unit, billed, seconds, quantity, cost = found[len(chosen) :]
        rows.append(
            UsageRow(
                day=named.get("day"),
                account=named.get("account"),
                model=named.get("model"),
                hardware=named.get("hardware"),
                phase=named.get("phase"),
                unit=unit,
                billed=bool(billed),
                seconds=float(seconds or 0.0),
                quantity=float(quantity or 0.0),
                cost_nanos=int(cost or 0),  # PostgreSQL's SUM of a bigint is a numeric
            )
        )
    return rows


def month_spend_nanos(
    connection: Connection | Session, account_id: int, start: date, end: date
) -> int:
    """What an account was billed from `start` to `end` (UTC days, both included)."""
    query = select(func.coalesce(func.sum(Usage.cost_nanos), 0)).where(
        Usage.account_id == account_id,
        Usage.billed.is_(True),
        Usage.day >= start,
        Usage.day <= end,
    )
    return int(connection.execute(query).scalar_one())


def locked_limit(
    connection: Connection, account_id: int
) -> tuple[int | None, str | None, str] | None:
    """An account's spend limit, the month its owner was last told of it and its username, its
    row locked until the transaction ends (PostgreSQL: `FOR NO KEY UPDATE`, so replicas check
    and tell one at a time; SQLite has one writer anyway and ignores it); None for an account
    that is gone."""
    found = connection.execute(_LOCKED_LIMIT, {"account": account_id}).first()
    return None if found is None else (found[0], found[1], found[2])


# Built once: it runs on every create (and building a statement costs more than running it).
_LOCKED_LIMIT = (
    select(Account.spend_limit_nanos, Account.spend_notified_month, Account.username)
    .where(Account.id == bindparam("account"))
    # FOR NO KEY UPDATE: checks wait for each other, while inserts that merely reference the
    # account (its predictions, in the same group commit elsewhere) do not wait.
    .with_for_update(key_share=True)
)


def payer(connection: Connection, account_id: int, deployment_id: int | None) -> int:
    """Who pays for a prediction: a deployment's owner (as the ledger bills it), else the
    account that creates it."""
    if deployment_id is None:
        return account_id
    owner = connection.execute(
        select(Deployment.owner_id).where(Deployment.id == deployment_id)
    ).scalar_one_or_none()
    return account_id if owner is None else int(owner)


def mark_notified(connection: Connection, account_id: int, month: str) -> None:
    connection.execute(
        update(Account).where(Account.id == account_id).values(spend_notified_month=month)
    )


@dataclass(frozen=True)
class MonthSpend:
    """An account's limit and what it was billed in a month."""

    limit_nanos: int | None
    spent_nanos: int
    month: str

    @property
    def reached(self) -> bool:
        return self.limit_nanos is not None and self.spent_nanos >= self.limit_nanos

    def as_json(self) -> dict[str, Any]:
        return {
            "spend_limit_usd": None if self.limit_nanos is None else usd(self.limit_nanos),
            "month": self.month,
            "month_spend_usd": usd(self.spent_nanos),
            "reached": self.reached,
        }


def month_spend(
    connection: Connection | Session, account_id: int, limit: int | None, day: date
) -> MonthSpend:
    first, last, month = month_bounds(day)
    return MonthSpend(limit, month_spend_nanos(connection, account_id, first, last), month)
