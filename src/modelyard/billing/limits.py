"""Monthly spend limits: the rule (a month's billed cost at or above the limit refuses new
predictions and trainings), and the one check the create path runs.

A month is a UTC calendar month, and its spend is the sum of the ledger's billed `cost_nanos`
whose `day` falls in it. The owner is told once a month, the first time a create is refused: a
WARNING log line here, and a notice on the web pages (which show it while the limit is reached).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

from sqlalchemy import Connection

from modelyard.store.usage_report import (
    MonthSpend,
    locked_limit,
    mark_notified,
    month_spend,
    payer,
    usd,
)

log = logging.getLogger("modelyard.billing")


def detail(state: MonthSpend) -> str:
    """Why a create is refused, for people (the 402's `detail`)."""
    assert state.limit_nanos is not None
    return (
        f"The monthly spend limit of ${usd(state.limit_nanos)} is reached: "
        f"${usd(state.spent_nanos)} was spent in {state.month} (UTC). New predictions and "
        "trainings are refused until the month ends or the limit is raised "
        "(PATCH /v1/account with spend_limit_usd); running ones finish."
    )


def today() -> date:
    return datetime.now(UTC).date()


def refusal(
    connection: Connection,
    account_id: int,
    day: date | None = None,
    *,
    deployment_id: int | None = None,
) -> MonthSpend | None:
    """The create path's check, in a write transaction: the payer's spend when its limit is
    reached (refuse the create), None otherwise. The payer is `account_id`, or for a
    deployment's prediction the deployment's owner (whom the ledger bills).

    The account's row is locked first (PostgreSQL), so checks on several replicas, and the
    once-a-month notice, happen one at a time. The first refusal of a month records the month
    and logs the notice; the others of that month say nothing more."""
    account_id = payer(connection, account_id, deployment_id)
    found = locked_limit(connection, account_id)
    if found is None:
        return None
    limit, notified, username = found
    if limit is None:
        return None
    state = month_spend(connection, account_id, limit, day or today())
    if not state.reached:
        return None
    if notified != state.month:
        mark_notified(connection, account_id, state.month)
        log.warning(
            "account %s reached its monthly spend limit: $%s spent of $%s in %s; new "
            "predictions and trainings are refused",
            username, usd(state.spent_nanos), usd(limit), state.month,
        )  # fmt: skip
    return state
